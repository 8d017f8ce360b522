"""VICReg's loss (Bardes et al. 2022): invariance, variance, covariance.

As the official code: invariance is the MSE between the two views' z;
variance is mean(relu(1 - sqrt(var + 1e-4))) per view (unbiased var), the
two views averaged; covariance is the sum of squared off-diagonal entries
of each view's covariance (over B - 1) divided by D, the two views summed.
Weights 25 / 25 / 1 in the official ImageNet run.
"""

import jax
import jax.numpy as jnp

from simsiam_jax.methods import base


def _variance(z):
  std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + 1e-4)
  return jnp.mean(jax.nn.relu(1.0 - std))


def _covariance(z):
  n, d = z.shape
  z = z - jnp.mean(z, axis=0)
  cov = z.T @ z / (n - 1)
  return (jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(jnp.diagonal(cov)))) / d


def vicreg_terms(z1: jax.Array, z2: jax.Array) -> dict:
  """{'invariance', 'variance', 'covariance'} of z1, z2 [B, D]."""
  z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
  return {'invariance': jnp.mean(jnp.square(z1 - z2)),
          'variance': 0.5 * (_variance(z1) + _variance(z2)),
          'covariance': _covariance(z1) + _covariance(z2)}


def vicreg_loss(z1, z2, sim_weight: float, var_weight: float,
                cov_weight: float) -> jax.Array:
  t = vicreg_terms(z1, z2)
  return (sim_weight * t['invariance'] + var_weight * t['variance'] +
          cov_weight * t['covariance'])


def _loss(out, config):
  vc = config.vicreg
  return vicreg_loss(out['z1'], out['z2'], vc.sim_weight, vc.var_weight,
                     vc.cov_weight)


METHOD = base.Method('vicreg', _loss, predictor=False)
