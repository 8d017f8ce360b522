"""SimSiam's loss in the method interface: `losses.simsiam_loss` on `config.loss`."""

from simsiam_jax import losses
from simsiam_jax.methods import base


def loss(out: dict, config):
  lc = config.loss
  return losses.simsiam_loss(
      out['p1'], out['p2'], out['z1'], out['z2'],
      stop_gradient=lc.stop_gradient, symmetric=lc.symmetric,
      similarity=lc.similarity)


METHOD = base.Method('simsiam', loss)
