"""SimCLR's loss: NT-Xent (Chen et al. 2020), symmetric over the two views.

Each of the 2B normalised projections is classified against the other
2B - 1: its other view is the positive, every other image's two views the
negatives. The official code (`add_contrastive_loss`) sums the two views'
mean cross-entropies; this is their mean, as in solo-learn and Lightly.
"""

import jax
import jax.numpy as jnp

from simsiam_jax import losses
from simsiam_jax.methods import base


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """Mean over the 2B views of -log softmax of the positive pair; z: [B, D]."""
  z = losses.l2_normalize(jnp.concatenate([z1, z2]).astype(jnp.float32))
  n = z1.shape[0]
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_p, positive[:, None], axis=-1))


METHOD = base.Method(
    'simclr', lambda out, config: nt_xent(out['z1'], out['z2'],
                                          config.simclr.temperature),
    predictor=False)
