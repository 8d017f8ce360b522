"""Learning-rate scaling, schedules and the optimiser (SGD or LARS) from optax.

Two parameter groups, by top-level module: 'predictor' and 'default'
(backbone and projector); `optax.multi_transform` gives the predictor its
constant learning rate (`fix_pred_lr`) or no update at all (`predictor =
'fixed_random'`). The classifier's groups ('head', 'backbone') are in
classify.py.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ('cosine', 'cosine_epoch', 'constant')
OPTIMIZERS = ('sgd', 'lars')
WD_MASKS = ('all', 'no_bn_bias')


def scaled_lr(base_lr: float, global_batch_size: int) -> float:
  """The linear scaling rule of the paper: lr = base_lr x B / 256."""
  return base_lr * global_batch_size / 256


def create_schedule(optim_config: ml_collections.ConfigDict, peak_lr: float,
                    steps_per_epoch: int, num_train_steps: int) -> optax.Schedule:
  """Learning rate per step.

  'cosine' decays every step to 0 at `num_train_steps`; 'cosine_epoch' is the
  official code's variant, which sets the cosine value once at the start of
  each epoch; 'constant' keeps the peak. A linear warm-up from 0 over
  `warmup_epochs` precedes either cosine.
  """
  kind = optim_config.schedule
  warmup_steps = int(round(optim_config.warmup_epochs * steps_per_epoch))
  if kind not in SCHEDULES:
    raise ValueError(f'optim.schedule must be one of {SCHEDULES}, got {kind!r}.')
  if kind == 'constant':
    return optax.constant_schedule(peak_lr)
  if warmup_steps >= num_train_steps:
    raise ValueError(f'warm-up ({warmup_steps} steps) must be shorter than the '
                     f'run ({num_train_steps} steps): lower optim.warmup_epochs.')

  def schedule(step):
    # The cosine runs after the warm-up, over the remaining steps.
    at = (step // steps_per_epoch) * steps_per_epoch if kind == 'cosine_epoch' else step
    t = jnp.clip((at - warmup_steps) / (num_train_steps - warmup_steps), 0, 1)
    lr = peak_lr * 0.5 * (1 + jnp.cos(math.pi * t))
    if warmup_steps:
      lr = jnp.where(step < warmup_steps, peak_lr * step / warmup_steps, lr)
    return lr

  return schedule


def param_labels(params) -> dict:
  """Labels every leaf by its group: 'predictor' or 'default'."""
  return {name: jax.tree.map(lambda _, n=name: _group(n), sub)
          for name, sub in params.items()}


def _group(module_name: str) -> str:
  return 'predictor' if module_name == 'predictor' else 'default'


def weight_decay_mask(kind: str):
  """'all' (the official code) or 'no_bn_bias' (only kernels decay)."""
  if kind not in WD_MASKS:
    raise ValueError(f'optim.weight_decay_mask must be one of {WD_MASKS}, '
                     f'got {kind!r}.')
  if kind == 'all':
    return None
  return lambda params: jax.tree.map(lambda p: p.ndim > 1, params)


def base_optimizer(optim_config, learning_rate) -> optax.GradientTransformation:
  kind = optim_config.optimizer
  mask = weight_decay_mask(optim_config.weight_decay_mask)
  if kind == 'sgd':
    # torch.optim.SGD: g += wd * p, then momentum, then scale by -lr.
    return optax.chain(
        optax.add_decayed_weights(optim_config.weight_decay, mask),
        optax.sgd(learning_rate, momentum=optim_config.momentum))
  if kind == 'lars':
    # BN and bias parameters are never scaled by the trust ratio.
    kernels = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    return optax.lars(
        learning_rate, weight_decay=optim_config.weight_decay,
        weight_decay_mask=True if mask is None else mask,
        trust_coefficient=optim_config.lars_trust_coefficient,
        eps=optim_config.lars_eps, trust_ratio_mask=kernels,
        momentum=optim_config.momentum)
  raise ValueError(f'optim.optimizer must be one of {OPTIMIZERS}, got {kind!r}.')


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                     num_train_steps: int):
  """Returns (optax transformation, schedule) for pretraining.

  Args:
    config: the full config; reads `optim`, `batch_size`, `model.predictor`.
    steps_per_epoch: optimiser steps per epoch.
    num_train_steps: total steps of the run.
  """
  oc = config.optim
  peak = scaled_lr(oc.base_lr, config.batch_size)
  schedule = create_schedule(oc, peak, steps_per_epoch, num_train_steps)
  transforms = {'default': base_optimizer(oc, schedule)}
  if config.model.predictor == 'fixed_random':
    # Paper Table 1c: the predictor stays at its random initialisation.
    transforms['predictor'] = optax.set_to_zero()
  elif oc.fix_pred_lr:
    # The official --fix-pred-lr: the predictor keeps the initial lr.
    transforms['predictor'] = base_optimizer(oc, peak)
  else:
    transforms['predictor'] = transforms['default']
  return optax.multi_transform(transforms, param_labels), schedule
