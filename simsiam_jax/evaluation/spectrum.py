"""How many directions a set of features spreads over: dimensional collapse.

`collapse_std` sees complete collapse (every image to one direction) but not
dimensional collapse: features that vary along only a few directions of a
wide space. Two numbers see it, both about d for features that fill d
dimensions evenly and 1 for features along one direction:

- effective rank (RankMe, Garrido et al. 2023): exp of the entropy of the
  singular values of the [N, D] matrix normalised to sum to 1; computed on
  the matrix as it is, not centred, as in the paper;
- participation ratio: (sum lambda)^2 / sum lambda^2 over the eigenvalues
  lambda of the features' covariance (centred), which needs no
  decomposition: (tr C)^2 / ||C||_F^2;

and one that asks whether the directions are decorrelated (the question
Barlow Twins and VICReg answer explicitly): the mean absolute off-diagonal
entry of the features' correlation matrix, 0 for decorrelated features, 1
for features that are all one direction. Constant (dead) features count as
uncorrelated.

Pure functions of arrays, usable inside a jitted step on sharded arrays.
"""

import jax
import jax.numpy as jnp

# RankMe's epsilon: keeps log finite for zero singular values.
RANKME_EPS = 1e-7


def effective_rank(x: jax.Array, eps: float = RANKME_EPS) -> jax.Array:
  """RankMe of features x [N, D]: exp(-sum p log p), p = s / ||s||_1 + eps."""
  s = jnp.linalg.svd(x.astype(jnp.float32), compute_uv=False)
  p = s / jnp.maximum(jnp.sum(s), 1e-30) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def participation_ratio(x: jax.Array) -> jax.Array:
  """(tr C)^2 / tr(C^2) of the covariance C of features x [N, D].

  C's nonzero eigenvalues are those of the N x N Gram matrix of the centred
  rows too: the smaller of the two products is formed.
  """
  x = x.astype(jnp.float32)
  x = x - jnp.mean(x, axis=0, keepdims=True)
  gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T
  trace = jnp.trace(gram)
  return trace ** 2 / jnp.maximum(jnp.sum(jnp.square(gram)), 1e-30)


def mean_abs_correlation(x: jax.Array) -> jax.Array:
  """Mean |corr(x_i, x_j)| over the D (D - 1) pairs i != j of features x [N, D]."""
  x = x.astype(jnp.float32)
  x = x - jnp.mean(x, axis=0, keepdims=True)
  cov = x.T @ x
  std = jnp.sqrt(jnp.diagonal(cov))
  corr = cov / jnp.maximum(std[:, None] * std[None, :], 1e-30)
  d = x.shape[1]
  off = jnp.abs(corr) * (1.0 - jnp.eye(d, dtype=corr.dtype))
  return jnp.sum(off) / max(d * (d - 1), 1)


def spread(x: jax.Array) -> dict:
  """{'rank': effective rank, 'pr': participation ratio, 'corr': mean
  absolute off-diagonal correlation} of x [N, D]."""
  return {'rank': effective_rank(x), 'pr': participation_ratio(x),
          'corr': mean_abs_correlation(x)}
