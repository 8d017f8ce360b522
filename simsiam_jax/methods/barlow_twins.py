"""Barlow Twins' loss (Zbontar et al. 2021): cross-correlation to the identity.

As the official code: each view's z is standardised over the batch (a
BatchNorm without affine: batch mean, biased variance, eps 1e-5), the
cross-correlation C = z1n^T z2n / B, and loss = sum_i (1 - C_ii)^2 +
lambda sum_{i != j} C_ij^2 (lambda = 0.0051 in the official ImageNet run).
"""

import jax
import jax.numpy as jnp

from simsiam_jax.methods import base


def standardise(z: jax.Array, eps: float = 1e-5) -> jax.Array:
  """(z - mean) / sqrt(var + eps) over the batch, per feature (biased var)."""
  z = z.astype(jnp.float32)
  mean = jnp.mean(z, axis=0)
  var = jnp.mean(jnp.square(z - mean), axis=0)
  return (z - mean) * jax.lax.rsqrt(var + eps)


def barlow_twins_loss(z1: jax.Array, z2: jax.Array,
                      lambda_offdiag: float) -> jax.Array:
  c = standardise(z1).T @ standardise(z2) / z1.shape[0]
  diag = jnp.diagonal(c)
  on = jnp.sum(jnp.square(1.0 - diag))
  off = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diag))
  return on + lambda_offdiag * off


METHOD = base.Method(
    'barlow_twins', lambda out, config: barlow_twins_loss(
        out['z1'], out['z2'], config.barlow_twins.lambda_offdiag),
    predictor=False)
