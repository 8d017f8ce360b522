"""SimSiam and the paper's comparison methods as small deltas of one step.

`config.method` names one; `get(name)` returns its `Method`: the loss the
train step takes of the two views' outputs, and whether the network has a
predictor (`model.predictor` must agree; the config check says so). The
train step, the network and everything around them are SimSiam's; adding a
method is one file here with a `METHOD`, its fields in configs/default.py,
and a line in `METHODS`. Methods with a momentum target (BYOL, MoCo v2) or
learnt prototypes (SwAV) have their losses and state here already; their
place in the step is still to come.

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


@dataclasses.dataclass(frozen=True)
class Method:
  """What a method changes in SimSiam's step.

  Attributes:
    name: its `config.method`.
    loss: (outputs, config) -> scalar, outputs = {'z1', 'z2', 'p1', 'p2'}
      of the global batch (p = z without a predictor).
    predictor: whether its online branch ends in the predictor MLP.
  """
  name: str
  loss: Callable
  predictor: bool = True


def _methods() -> dict:
  # pylint: disable=g-import-not-at-top
  from simsiam_jax.methods import barlow_twins
  from simsiam_jax.methods import simclr
  from simsiam_jax.methods import simsiam
  from simsiam_jax.methods import vicreg
  return {m.name: m for m in (simsiam.METHOD, simclr.METHOD,
                              barlow_twins.METHOD, vicreg.METHOD)}


def names() -> list[str]:
  return sorted(_methods())


def get(name: str) -> Method:
  """The method called `name` (config.method); KeyError if there is none."""
  return _methods()[name]
