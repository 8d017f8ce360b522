"""SimSiam and the paper's comparison methods as small deltas of one step.

`config.method` names one; `registry.get(name)` returns its `base.Method`:
the loss the train step takes of the two views' outputs, and whether the
network has a predictor (`model.predictor` must agree; the config check says so). The
train step, the network and everything around them are SimSiam's; adding a
method is one file here with a `METHOD`, its fields in configs/default.py,
and a line in `registry.py`. A method with a momentum target (BYOL, MoCo
v2) sets `target`; its state beside the network (the target, a queue) is
`TrainState.extra`, made by `init_extra` and moved on by `next_extra`.
SwAV's prototypes are a parameter of the network (`model.prototypes`)
that its loss reads from the parameters the step passes it.

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
  base.py          the Method record; registry.py the list of methods
"""
