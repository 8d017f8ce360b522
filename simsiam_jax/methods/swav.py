"""SwAV's loss (Caron et al. 2020): swapped prediction of Sinkhorn codes.

As the official code (main_swav.py, two crops): scores = normalised z .
normalised prototypes [B, K]; each view's codes q come from
`sinkhorn(scores)` without gradient (eps 0.05, 3 iterations) and are
predicted from the other view's softmax(scores / T) (T = 0.1): loss =
-1/2 sum over the two (q, view) pairs of mean_b sum_k q log p. 3000
prototypes for ImageNet. The Sinkhorn sums run over the global batch.
"""

import jax
import jax.numpy as jnp

from simsiam_jax import losses


def sinkhorn(scores: jax.Array, epsilon: float, iterations: int) -> jax.Array:
  """Codes [B, K] with rows summing to 1 and columns to B / K; no gradient."""
  scores = jax.lax.stop_gradient(scores).astype(jnp.float32)
  b, k = scores.shape
  # exp(s / eps) normalised to sum 1; the max is taken out first, which the
  # normalisation undoes, so large scores do not overflow.
  q = jnp.exp((scores - jnp.max(scores)) / epsilon).T  # [K, B]
  q = q / jnp.sum(q)
  for _ in range(iterations):
    q = q / jnp.sum(q, axis=1, keepdims=True) / k
    q = q / jnp.sum(q, axis=0, keepdims=True) / b
  return (q * b).T


def prototype_scores(z: jax.Array, prototypes: jax.Array) -> jax.Array:
  """Cosine of each z [B, D] with each prototype [K, D] -> [B, K]."""
  return (losses.l2_normalize(z.astype(jnp.float32)) @
          losses.l2_normalize(prototypes.astype(jnp.float32)).T)


def swav_loss(scores1: jax.Array, scores2: jax.Array, temperature: float,
              epsilon: float, iterations: int) -> jax.Array:
  q1 = sinkhorn(scores1, epsilon, iterations)
  q2 = sinkhorn(scores2, epsilon, iterations)

  def predict(q, scores):
    log_p = jax.nn.log_softmax(scores / temperature, axis=-1)
    return -jnp.mean(jnp.sum(q * log_p, axis=-1))

  return 0.5 * (predict(q1, scores2) + predict(q2, scores1))
