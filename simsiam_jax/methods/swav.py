"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn codes.

As the official code (main_swav.py, two crops): scores = normalised z .
normalised prototypes [B, K]; each view's codes q come from
`sinkhorn(scores)` without gradient (eps 0.05, 3 iterations) and are
predicted from the other view's softmax(scores / T) (T = 0.1): loss =
-1/2 sum over the two (q, view) pairs of mean_b sum_k q log p. 3000
prototypes for ImageNet. The Sinkhorn sums run over the global batch.

The prototypes are a parameter of the network (`model.prototypes`,
SimSiam's "absorbed into the encoder"), normalised inside the loss with
full gradient, as the SimSiam paper's reproduction does (its footnote 8;
official SwAV normalises them outside the gradient after each step). They
get no gradient for the first `swav.freeze_prototypes_epochs` (official
--freeze_prototypes_niters; weight decay still reaches them, which their
in-graph normalisation makes harmless). Not here: multi-crop and the
feature queue (official: for small batches, from a later epoch on).
With `model.predictor='mlp'` (the paper's Section 6 hybrid "SwAV w/
predictor", 65.2 against 66.5 %) the predictions p score the prototypes
and the projections z give the codes.
"""

import jax
import jax.numpy as jnp

from simsiam_jax import errors
from simsiam_jax import losses
from simsiam_jax.methods import base


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
              epsilon: float, iterations: int, pred1: jax.Array | None = None,
              pred2: jax.Array | None = None) -> jax.Array:
  """Swapped prediction: view 1's codes from `scores1` predicted from view
  2's `pred2` (default `scores2`), and the other way round."""
  q1 = sinkhorn(scores1, epsilon, iterations)
  q2 = sinkhorn(scores2, epsilon, iterations)
  pred1 = scores1 if pred1 is None else pred1
  pred2 = scores2 if pred2 is None else pred2

  def predict(q, scores):
    log_p = jax.nn.log_softmax(scores / temperature, axis=-1)
    return -jnp.mean(jnp.sum(q * log_p, axis=-1))

  return 0.5 * (predict(q1, pred2) + predict(q2, pred1))


def _loss(out, config):
  sc = config.swav
  prototypes = out['params']['prototypes']
  prototypes = jnp.where(out['epoch'] < sc.freeze_prototypes_epochs,
                         jax.lax.stop_gradient(prototypes), prototypes)
  scores = {k: prototype_scores(out[k], prototypes)
            for k in ('z1', 'z2', 'p1', 'p2')}
  return swav_loss(scores['z1'], scores['z2'], sc.temperature, sc.epsilon,
                   sc.sinkhorn_iterations, scores['p1'], scores['p2'])


def _check(config):
  if config.model.get('prototypes', 0) <= 0:
    raise errors.ConfigError(
        "method 'swav' needs prototypes: add --config.model.prototypes=K "
        '(SwAV: 3000 for ImageNet).')


METHOD = base.Method('swav', _loss, predictor=False, hybrid_predictor=True,
                     check=_check)
