"""The momentum (EMA) target network of BYOL and MoCo.

target <- tau target + (1 - tau) online after each step. BYOL raises tau
from tau_base to 1 along a cosine over training (tau_k = 1 - (1 - tau_base)
(cos(pi k / K) + 1) / 2; tau_base 0.996); MoCo keeps it constant (0.999).
"""

import jax
import optax


def momentum(step, tau_base: float, num_steps: int, cosine: bool):
  """tau at `step`: constant, or BYOL's cosine rise to 1 at `num_steps`."""
  if not cosine:
    return tau_base
  return 1.0 - optax.cosine_decay_schedule(1.0 - tau_base, num_steps)(step)


def ema_update(target, online, tau):
  """tau * target + (1 - tau) * online, leaf by leaf; no gradient."""
  return optax.incremental_update(jax.lax.stop_gradient(online), target,
                                  1.0 - tau)


def online_part(params) -> dict:
  """The online network's backbone and projector: what the target copies."""
  return {'backbone': params['backbone'], 'projector': params['projector']}


def init(params, rng) -> dict:
  """The target network at the start: a copy of the online one."""
  del rng
  return {'target': online_part(params)}


def next_target(extra, params, tau):
  """`extra` with its target moved towards the online network by `tau`."""
  return {**extra, 'target': ema_update(extra['target'], online_part(params),
                                        tau)}
