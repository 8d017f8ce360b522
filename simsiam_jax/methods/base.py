"""The `Method` record: what a method changes in SimSiam's step (leaf)."""

import dataclasses
from typing import Callable


def _no_extra(extra, params, out, step, config, num_train_steps):
  del params, out, step, config, num_train_steps
  return extra


@dataclasses.dataclass(frozen=True)
class Method:
  """What a method changes in SimSiam's step.

  Attributes:
    name: its `config.method`.
    loss: (outputs, config) -> scalar, outputs = {'z1', 'z2', 'p1', 'p2'}
      of the global batch (p = z without a predictor); with `target`, also
      the target network's projections 't1', 't2'; 'extra', the state;
      'params', the online parameters (SwAV's prototypes live there); and
      'epoch', the (fractional) epoch of the step.
    predictor: whether its online branch ends in the predictor MLP.
    hybrid_predictor: whether a method without one may add it (the paper's
      Section 6 hybrids: its loss then reads p where it read z).
    target: whether it has a momentum target network (`extra['target']`:
      the backbone and projector, an EMA of the online ones).
    init_extra: None, or (config) -> ((params, rng) -> extra state).
    next_extra: (extra, new params, outputs, step, config, num_train_steps)
      -> extra state after the step.
    check: (config) -> None; raises errors.ConfigError for settings the
      method cannot run with (config_check calls it).
  """
  name: str
  loss: Callable
  predictor: bool = True
  hybrid_predictor: bool = False
  target: bool = False
  init_extra: Callable | None = None
  next_extra: Callable = _no_extra
  check: Callable = lambda config: None
