"""SimCLR's loss: NT-Xent (Chen et al. 2020), symmetric over the two views.

Each of the 2B normalised projections is classified against the other
2B - 1: its other view is the positive, every other image's two views the
negatives. The official code (`add_contrastive_loss`) sums the two views'
mean cross-entropies; this is their mean, as in solo-learn and Lightly.

The SimSiam paper's Section 6 hybrids (its SimCLR 66.5, with a predictor
66.4, with a predictor and stop-gradient 66.0 % ImageNet linear top-1):
with `model.predictor='mlp'` the anchors are the predictions p and the
candidates the projections z (p1_i's positive is z2_i; its negatives every
z but z1_i, its own view's projection); `simclr.stop_gradient` holds the
candidates constant. Without a predictor p = z and this is NT-Xent.
"""

import jax
import jax.numpy as jnp

from simsiam_jax import losses
from simsiam_jax.methods import base


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float,
            p1: jax.Array | None = None, p2: jax.Array | None = None,
            stop_gradient: bool = False) -> jax.Array:
  """Mean over the 2B anchors of -log softmax of the positive; all [B, D].

  Anchors p (default: z), candidates z: anchor i of view a scores all 2B
  candidates but its own view's z_i; its positive is the other view's z_i.
  """
  z = losses.l2_normalize(jnp.concatenate([z1, z2]).astype(jnp.float32))
  p = z if p1 is None else losses.l2_normalize(
      jnp.concatenate([p1, p2]).astype(jnp.float32))
  if stop_gradient:
    z = jax.lax.stop_gradient(z)
  n = z1.shape[0]
  logits = p @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_p, positive[:, None], axis=-1))


def _loss(out, config):
  hybrid = config.model.predictor != 'none'
  return nt_xent(out['z1'], out['z2'], config.simclr.temperature,
                 *((out['p1'], out['p2']) if hybrid else (None, None)),
                 stop_gradient=config.simclr.stop_gradient)


METHOD = base.Method('simclr', _loss, predictor=False, hybrid_predictor=True)
