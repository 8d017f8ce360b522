"""Collapse watch: SimSiam's failure modes, seen coming from two statistics.

- Complete collapse (paper Figure 2): every image maps to one direction.
  `collapse_std` (losses.collapse_std) is about 1 for healthy outputs and
  falls to 0.
- Dimensional collapse: z varies along a few directions only. `collapse_std`
  cannot see it (the projector's last BN gives every coordinate unit
  variance); the effective rank of the batch's z (`batch_z_rank`,
  evaluation/spectrum.py) can, against the floor `collapse.min_rank`.
"""

from absl import logging

ADVICE = ('Things to try: keep loss.stop_gradient=True, keep the predictor '
          "(model.predictor='mlp'), lower optim.base_lr, add warm-up "
          '(optim.warmup_epochs), keep BN in the heads (model.head_bn).')

RANK_ADVICE = (
    'Likely causes: a step too large for the schedule (lower optim.base_lr '
    'or add optim.warmup_epochs; behind BN a shrinking kernel raises the '
    'effective step: see param_norm fall), weight decay shrinking the '
    'kernels (lower optim.weight_decay), a predictor lr out of step with the '
    'encoder (optim.fix_pred_lr), augmentations too strong for the images '
    '(data.aug), or heads too narrow (model.proj_dim, model.pred_hidden_dim).')


class Collapsed(RuntimeError):
  """The representation stayed collapsed and config.collapse.stop is set."""


class CollapseWatch:
  """Warns (or stops) when a collapse statistic stays low long enough.

  Low means collapse_std under `threshold`, or (with `min_rank` > 0) the
  effective rank of the batch's z under `min_rank`.
  """

  def __init__(self, threshold: float, patience_steps: int, stop: bool,
               min_rank: float = 0.0):
    self.threshold = threshold
    self.patience_steps = patience_steps
    self.stop = stop
    self.min_rank = min_rank
    self.healthy_checkpoint = None  # the newest checkpoint saved while healthy
    self._low_since = None
    self._warned = False

  @property
  def healthy(self) -> bool:
    return self._low_since is None

  def _problem(self, metrics: dict):
    """(what is low, advice), or None when healthy."""
    std = metrics.get('collapse_std')
    if std is not None and std < self.threshold:
      return f'collapse_std {std:.3f} < {self.threshold}', ADVICE
    rank = metrics.get('batch_z_rank')
    if self.min_rank > 0 and rank is not None and rank < self.min_rank:
      return (f'dimensional collapse: effective rank of z {rank:.1f} < '
              f'collapse.min_rank={self.min_rank:g}', RANK_ADVICE)
    return None

  def update(self, step: int, metrics: dict):
    """Feeds the averaged metrics of the log window ending at `step`."""
    problem = self._problem(metrics)
    if problem is None:
      self._low_since, self._warned = None, False
      return
    if self._low_since is None:
      self._low_since = step
    if step - self._low_since < self.patience_steps or self._warned:
      return
    self._warned = True
    what, advice = problem
    where = (f'the last checkpoint saved before it is step '
             f'{self.healthy_checkpoint}' if self.healthy_checkpoint is not None
             else 'no checkpoint was saved before it')
    message = (f'Collapse: {what} since step {self._low_since} '
               f'({step - self._low_since} steps); {where}. {advice}')
    if self.stop:
      raise Collapsed(message)
    logging.warning('%s', message)

  def checkpoint_saved(self, step: int):
    if self.healthy:
      self.healthy_checkpoint = step
