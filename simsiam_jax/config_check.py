"""Every config setting that can be checked before any work, in one place.

`check(config)` runs in main.py before a mode starts: nothing is read,
compiled or written first. Settings that depend on the data or the
topology (batch size against the devices and the split) are checked where
those are known (parallel.check_batch_size, sources.num_steps), with the
same error class.
"""

import ml_collections

from simsiam_jax import errors
from simsiam_jax import losses
from simsiam_jax.methods import registry
from simsiam_jax import optim
from simsiam_jax.data import spec
from simsiam_jax.models import heads
from simsiam_jax.models import resnet
from simsiam_jax.models import simsiam

TRAINING_MODES = ('pretrain', 'linear', 'finetune')


def _one_of(name: str, value, allowed):
  if value not in allowed:
    raise errors.ConfigError(
        f'{name} must be one of {sorted(allowed)}, got {value!r}.')


def _positive(name: str, value):
  if not value > 0:
    raise errors.ConfigError(f'{name} must be > 0, got {value!r}.')


def check(config: ml_collections.ConfigDict):
  """Raises errors.ConfigError (or data's DataConfigError) naming the fix."""
  mc, oc = config.model, config.optim
  _one_of('model.depth', mc.depth, resnet.STAGE_SIZES)
  _one_of('model.stem', mc.stem, ('imagenet', 'cifar'))
  _one_of('model.conv_impl', mc.get('conv_impl', 'auto'), resnet.CONV_IMPLS)
  _one_of('model.predictor', mc.predictor, simsiam.PREDICTORS)
  _one_of('method', config.method, registry.names())
  method = registry.get(config.method)
  if (not method.predictor and not method.hybrid_predictor and
      mc.predictor != 'none'):
    raise errors.ConfigError(
        f'method {config.method!r} has no predictor: add '
        '--config.model.predictor=none.')
  method.check(config)
  _one_of('model.head_bn', mc.head_bn, heads.HEAD_BN)
  _positive('model.width', mc.width)
  _positive('data.image_size', config.data.image_size)
  _positive('batch_size', config.batch_size)
  _positive('eval.batch_size', config.eval.batch_size)
  _positive('log_every_steps', config.log_every_steps)
  _positive('checkpoint_every_steps', config.checkpoint_every_steps)
  spec.check(config.data)
  if config.mode in TRAINING_MODES:
    _positive('optim.base_lr', oc.base_lr)
    _one_of('optim.schedule', oc.schedule, optim.SCHEDULES)
    _one_of('optim.optimizer', oc.optimizer, optim.OPTIMIZERS)
    _one_of('optim.weight_decay_mask', oc.weight_decay_mask, optim.WD_MASKS)
    if oc.weight_decay < 0:
      raise errors.ConfigError(
          f'optim.weight_decay must be >= 0, got {oc.weight_decay!r}.')
    _one_of('loss.similarity', config.loss.similarity, losses.SIMILARITIES)
    if config.num_train_steps <= 0:
      _positive('num_epochs (with num_train_steps <= 0)', config.num_epochs)
