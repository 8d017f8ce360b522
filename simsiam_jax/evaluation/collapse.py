"""Collapse watch: SimSiam's failure mode, seen coming from the collapse statistic.

`collapse_std` (losses.collapse_std) is about 1 for healthy outputs and falls
to 0 when every image maps to the same direction (paper Figure 2).
"""

from absl import logging

ADVICE = ('Things to try: keep loss.stop_gradient=True, keep the predictor '
          "(model.predictor='mlp'), lower optim.base_lr, add warm-up "
          '(optim.warmup_epochs), keep BN in the heads (model.head_bn).')


class Collapsed(RuntimeError):
  """The representation stayed collapsed and config.collapse.stop is set."""


class CollapseWatch:
  """Warns (or stops) when collapse_std stays under a threshold long enough."""

  def __init__(self, threshold: float, patience_steps: int, stop: bool):
    self.threshold = threshold
    self.patience_steps = patience_steps
    self.stop = stop
    self.healthy_checkpoint = None  # the newest checkpoint saved while healthy
    self._low_since = None
    self._warned = False

  @property
  def healthy(self) -> bool:
    return self._low_since is None

  def update(self, step: int, collapse_std: float):
    """Feeds the statistic of the log window ending at `step`."""
    if collapse_std >= self.threshold:
      self._low_since, self._warned = None, False
      return
    if self._low_since is None:
      self._low_since = step
    if step - self._low_since < self.patience_steps or self._warned:
      return
    self._warned = True
    where = (f'the last checkpoint saved before it is step '
             f'{self.healthy_checkpoint}' if self.healthy_checkpoint is not None
             else 'no checkpoint was saved before it')
    message = (f'Collapse: collapse_std {collapse_std:.3f} < {self.threshold} '
               f'since step {self._low_since} ({step - self._low_since} steps); '
               f'{where}. {ADVICE}')
    if self.stop:
      raise Collapsed(message)
    logging.warning('%s', message)

  def checkpoint_saved(self, step: int):
    if self.healthy:
      self.healthy_checkpoint = step
