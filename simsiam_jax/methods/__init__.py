"""SimSiam and the paper's comparison methods as small deltas of one step.

`config.method` names one; `get(name)` returns its `Method`: the loss the
train step takes of the two views' outputs, and whether the network has a
predictor (`model.predictor` must agree; the config check says so). The
train step, the network and everything around them are SimSiam's; adding a
method is one file here with a `METHOD`, its fields in configs/default.py,
and a line in `METHODS`. A method with a momentum target (BYOL, MoCo v2) sets
`target`; its state beside the network (the target, a queue) is
`TrainState.extra`, made by `init_extra` and moved on by `next_extra`.
SwAV's loss and Sinkhorn are here; its prototypes are not yet in the
network.

Each file holds one method's loss and the state it adds, as pure functions
of the global batch: under the jitted step the batch is one array sharded
over the mesh, so a sum over the batch (negatives, Sinkhorn, a
cross-correlation or covariance) is a sum over every device's examples.

  simclr.py        NT-Xent over the 2B views (negatives)
  moco.py          InfoNCE against a first-in-first-out queue of keys
  byol.py          2 - 2 cos(p, target), EMA of the online network
  swav.py          swapped prediction of Sinkhorn codes over prototypes
  barlow_twins.py  cross-correlation to the identity
  vicreg.py        invariance, variance and covariance terms
  target.py        the momentum (EMA) target network and its schedule
  simsiam.py       SimSiam's own loss, from `config.loss`
"""

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
      the target network's projections 't1', 't2'; and 'extra', the state.
    predictor: whether its online branch ends in the predictor MLP.
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
  target: bool = False
  init_extra: Callable | None = None
  next_extra: Callable = _no_extra
  check: Callable = lambda config: None


def _methods() -> dict:
  # pylint: disable=g-import-not-at-top
  from simsiam_jax.methods import barlow_twins
  from simsiam_jax.methods import byol
  from simsiam_jax.methods import moco
  from simsiam_jax.methods import simclr
  from simsiam_jax.methods import simsiam
  from simsiam_jax.methods import vicreg
  return {m.name: m for m in (simsiam.METHOD, simclr.METHOD, moco.METHOD,
                              byol.METHOD, barlow_twins.METHOD,
                              vicreg.METHOD)}


def names() -> list[str]:
  return sorted(_methods())


def get(name: str) -> Method:
  """The method called `name` (config.method); KeyError if there is none."""
  return _methods()[name]


def extra_init(config):
  """The (params, rng) -> extra state of `config`'s method, or None.

  A config saved before methods existed is SimSiam's.
  """
  method = get(config.get('method', 'simsiam'))
  return None if method.init_extra is None else method.init_extra(config)
