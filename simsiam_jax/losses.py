"""SimSiam's loss, its ablated variants (paper section 4) and the collapse statistic.

Everything here is a pure function of arrays; the switches come from
`config.loss`.
"""

import jax
import jax.numpy as jnp

SIMILARITIES = ('cosine', 'cross_entropy')


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / ||x|| with a finite value and gradient at x = 0.

  `x / norm(x)` gives NaN gradients at zero; clamping the squared norm before
  the rsqrt does not.
  """
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps))


def negative_cosine(p: jax.Array, z: jax.Array) -> jax.Array:
  """D(p, z) = -<p/||p||, z/||z||>, averaged over the batch. p, z: [B, D]."""
  p = l2_normalize(p.astype(jnp.float32))
  z = l2_normalize(z.astype(jnp.float32))
  return -jnp.mean(jnp.sum(p * z, axis=-1))


def cross_entropy_similarity(p: jax.Array, z: jax.Array) -> jax.Array:
  """D(p, z) = -softmax(z) . log softmax(p) (paper section 4.4), batch mean."""
  log_p = jax.nn.log_softmax(p.astype(jnp.float32), axis=-1)
  target = jax.nn.softmax(z.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.sum(target * log_p, axis=-1))


def simsiam_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array,
                 *, stop_gradient: bool = True, symmetric: bool = True,
                 similarity: str = 'cosine') -> jax.Array:
  """L = 0.5 D(p1, sg(z2)) + 0.5 D(p2, sg(z1)).

  Args:
    p1, p2: predictions of the two views, [B, D].
    z1, z2: projections of the two views, [B, D].
    stop_gradient: stop the gradient through the targets z. Without it SimSiam
      collapses (paper Figure 2).
    symmetric: average both directions; False keeps D(p1, z2) only (Table 5).
    similarity: 'cosine' or 'cross_entropy' (Table 4).

  Returns:
    Scalar loss; in [-1, 1] for the cosine similarity.
  """
  if similarity == 'cosine':
    dist = negative_cosine
  elif similarity == 'cross_entropy':
    dist = cross_entropy_similarity
  else:
    raise ValueError(f'similarity must be one of {SIMILARITIES}, '
                     f'got {similarity!r}.')
  if stop_gradient:
    # The target branch is a constant: this is what keeps SimSiam from the
    # collapsed solution (the paper's central finding).
    z1, z2 = jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2)
  if not symmetric:
    return dist(p1, z2)
  return 0.5 * dist(p1, z2) + 0.5 * dist(p2, z1)


def collapse_std(z: jax.Array) -> jax.Array:
  """Per-channel std of l2-normalised z over the batch, averaged, x sqrt(D).

  About 1 for well spread outputs (the std of a unit vector's coordinate is
  1/sqrt(D)), 0 when every input maps to the same direction (paper Fig. 2).
  z: [B, D].
  """
  z = l2_normalize(z.astype(jnp.float32))
  return jnp.mean(jnp.std(z, axis=0)) * jnp.sqrt(z.shape[-1])
