"""The paper's comparison methods as small deltas of SimSiam's step.

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
"""
