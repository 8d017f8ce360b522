"""BYOL's loss (Grill et al. 2020): 2 - 2 cos(p, target), both directions.

The target is the momentum network's projection (target.py), held
constant. As in the official code the two directions are summed: loss =
D(p1, t2) + D(p2, t1), each a batch mean of 2 - 2 cos.

`byol.tau_schedule='constant'` with `tau_base=0`: the target is the
online network of this step, held constant: SimSiam with BYOL's loss (the
SimSiam paper's "BYOL without the momentum encoder").
"""

import jax
import jax.numpy as jnp

from simsiam_jax import errors
from simsiam_jax import losses
from simsiam_jax.methods import base
from simsiam_jax.methods import target


def regression(p: jax.Array, target: jax.Array) -> jax.Array:
  """Batch mean of ||p/|p| - t/|t|||^2 = 2 - 2 cos(p, t); no gradient into t."""
  p = losses.l2_normalize(p.astype(jnp.float32))
  t = losses.l2_normalize(jax.lax.stop_gradient(target).astype(jnp.float32))
  return jnp.mean(2.0 - 2.0 * jnp.sum(p * t, axis=-1))


def byol_loss(p1, p2, t1, t2) -> jax.Array:
  """Symmetric BYOL loss: p from the online predictor, t from the target."""
  return regression(p1, t2) + regression(p2, t1)


def _next(extra, params, out, step, config, num_train_steps):
  del out
  tau = target.momentum(step, config.byol.tau_base, num_train_steps,
                        cosine=config.byol.tau_schedule == 'cosine')
  return target.next_target(extra, params, tau)


def _check(config):
  if config.byol.tau_schedule not in ('cosine', 'constant'):
    raise errors.ConfigError(
        "byol.tau_schedule must be 'cosine' or 'constant', got "
        f'{config.byol.tau_schedule!r}.')


METHOD = base.Method(
    'byol', lambda out, config: byol_loss(out['p1'], out['p2'], out['t1'],
                                          out['t2']),
    predictor=True, target=True, init_extra=lambda config: target.init,
    next_extra=_next, check=_check)
