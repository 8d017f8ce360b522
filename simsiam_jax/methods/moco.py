"""MoCo v2's loss and queue (He et al. 2020; Chen et al. 2020, v2).

InfoNCE of each query against its key (the momentum encoder's projection
of the other view) and a queue of earlier keys, all l2-normalised, at
temperature T (v2: T = 0.2, K = 65536 keys, momentum 0.999). As the
official code (moco/builder.py): logits [B, 1 + K] = [q.k, q.queue] / T,
label 0; the queue is a ring of K keys whose oldest B are overwritten by
the batch's keys after each step (K a multiple of the global batch).
The queue lives in TrainState.extra, replicated on every device like the
rest of the state (65,536 keys of MoCo v2's 128 dims are 32 MB, of a 2048-d
projector 512 MB); the keys of the whole
global batch enter it, so every device sees every negative.
"""

import jax
import jax.numpy as jnp

from simsiam_jax import errors
from simsiam_jax import losses
from simsiam_jax.methods import base
from simsiam_jax.methods import target


def info_nce(q: jax.Array, k: jax.Array, queue: jax.Array,
             temperature: float) -> jax.Array:
  """Mean cross-entropy of the positive key; q, k: [B, D], queue: [K, D]."""
  q = losses.l2_normalize(q.astype(jnp.float32))
  k = losses.l2_normalize(jax.lax.stop_gradient(k).astype(jnp.float32))
  queue = jax.lax.stop_gradient(queue).astype(jnp.float32)
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  logits = jnp.concatenate([positive, q @ queue.T], axis=-1) / temperature
  return -jnp.mean(jax.nn.log_softmax(logits, axis=-1)[:, 0])


def init_queue(key: jax.Array, size: int, dim: int) -> dict:
  """{'keys': [size, dim] random unit vectors, 'ptr': 0}, as the official code."""
  keys = losses.l2_normalize(jax.random.normal(key, (size, dim), jnp.float32))
  return {'keys': keys, 'ptr': jnp.zeros((), jnp.int32)}


def enqueue(queue: dict, keys: jax.Array) -> dict:
  """Overwrites the oldest B entries with `keys` [B, D] (first in, first out)."""
  size, b = queue['keys'].shape[0], keys.shape[0]
  if size % b:
    raise ValueError(f'queue size {size} must be a multiple of the global '
                     f'batch {b}.')
  new = losses.l2_normalize(jax.lax.stop_gradient(keys).astype(jnp.float32))
  stored = jax.lax.dynamic_update_slice_in_dim(queue['keys'], new,
                                               queue['ptr'], axis=0)
  return {'keys': stored, 'ptr': (queue['ptr'] + b) % size}


def _loss(out, config):
  """Symmetric: each view's query against the other view's key."""
  queue, t = out['extra']['queue']['keys'], config.moco.temperature
  return 0.5 * (info_nce(out['z1'], out['t2'], queue, t) +
                info_nce(out['z2'], out['t1'], queue, t))


def _init(config):
  def init(params, rng):
    return {**target.init(params, rng),
            'queue': init_queue(rng, config.moco.queue_size,
                                config.model.proj_dim)}
  return init


def _next(extra, params, out, step, config, num_train_steps):
  del step, num_train_steps
  extra = target.next_target(extra, params, config.moco.momentum)
  keys = jnp.concatenate([out['t1'], out['t2']])
  return {**extra, 'queue': enqueue(extra['queue'], keys)}


def _check(config):
  size, keys = config.moco.queue_size, 2 * config.batch_size
  if size <= 0 or size % keys:
    raise errors.ConfigError(
        f'moco.queue_size={size} must be a positive multiple of the {keys} '
        'keys a step enqueues (2 x batch_size).')


METHOD = base.Method('moco_v2', _loss, predictor=False, target=True,
                        init_extra=_init, next_extra=_next, check=_check)
