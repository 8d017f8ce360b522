"""Linear probe ('linear') and fine-tuning ('finetune') of a pretrained backbone.

  python -m simsiam_jax.main --config=configs/fashion_mnist_linear.py \
      --config.pretrained.workdir=PRETRAIN_DIR --workdir=PROBE_DIR

Linear probe (the official protocol): the backbone is frozen, BatchNorm runs
in inference mode and no gradient reaches it; a new linear layer (weights
N(0, 0.01), zero bias) is trained on one augmented view per image. At the end
the backbone is checked to be bit-identical to the checkpoint it came from.
Fine-tuning trains the backbone too (BatchNorm in training mode), at its own
learning rate (`classifier.backbone_base_lr`).

The backbone is rebuilt from the pretraining run's saved config; this run's
checkpoints record that model, so a probe resumes like a pretraining run.

Semi-supervised setting (the "1 % labels" of SimCLR/BYOL/SimSiam tables):
`classifier.label_fraction` < 1 trains on a class-balanced subset of the
train split, chosen from the labels by `classifier.label_seed` before any
sharding, so the same on every epoch, resume and topology; epochs and steps
follow the subset's size, and `label_subset.json` in the workdir lists it.
`classifier.from_scratch=True` (finetune only, with no
`pretrained.workdir`) fine-tunes a randomly initialised backbone of
`config.model` instead: the baseline the pretraining must beat.
"""

import functools
import json

from absl import logging
from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from simsiam_jax import checkpointing
from simsiam_jax import errors
from simsiam_jax import loop
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import preemption
from simsiam_jax import pretrained
from simsiam_jax import rngs
from simsiam_jax import state as state_lib
from simsiam_jax import workdir as workdir_lib
from simsiam_jax.data import sources
from simsiam_jax.models import simsiam

MODES = ('linear', 'finetune')
SUBSET_FILE = 'label_subset.json'


class Classifier(nn.Module):
  """A backbone and a new linear layer ('head') on its pooled features."""
  backbone: nn.Module
  num_classes: int
  frozen: bool
  head_init_std: float = 0.01

  @nn.compact
  def __call__(self, x, train: bool = True):
    # Frozen: BN on running statistics, and no gradient into the backbone.
    h = self.backbone(x, train=train and not self.frozen)
    if self.frozen:
      h = jax.lax.stop_gradient(h)
    return nn.Dense(self.num_classes, name='head',
                    kernel_init=nn.initializers.normal(self.head_init_std),
                    bias_init=nn.initializers.zeros)(h.astype(jnp.float32))


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                     num_train_steps: int, frozen: bool):
  """(optax transformation, head schedule): the head follows `config.optim`.

  The backbone gets no update in a probe (`optax.set_to_zero`, no optimiser
  state); when fine-tuning it follows the same schedule from its own base lr.
  """
  oc = config.optim
  steps = (steps_per_epoch, num_train_steps)
  schedule = optim.create_schedule(
      oc, optim.scaled_lr(oc.base_lr, config.batch_size), *steps)
  if frozen:
    backbone = optax.set_to_zero()
  else:
    base = config.classifier.backbone_base_lr
    base = oc.base_lr if base < 0 else base
    backbone = optim.base_optimizer(oc, optim.create_schedule(
        oc, optim.scaled_lr(base, config.batch_size), *steps))
  labels = lambda params: {  # pylint: disable=g-long-lambda
      name: jax.tree.map(lambda _, n=name: 'head' if n == 'head' else
                         'backbone', sub) for name, sub in params.items()}
  tx = optax.multi_transform(
      {'head': optim.base_optimizer(oc, schedule), 'backbone': backbone},
      labels)
  return tx, schedule


def state_initializer(model: Classifier, tx, image_shape):
  """(rng[, backbone params, backbone BN statistics]) -> TrainState.

  Without a backbone the model's own random initialisation is kept (from
  scratch); the head is drawn from `rng` either way.
  """
  def init(rng, backbone_params=None, backbone_stats=None):
    x = jnp.zeros((2, *image_shape), jnp.float32)
    variables = model.init(rng, x, train=False)
    params, stats = variables['params'], variables['batch_stats']
    if backbone_params is not None:
      params = {**params, 'backbone': backbone_params}
      stats = {'backbone': backbone_stats}
    return state_lib.TrainState.create(apply_fn=model.apply, params=params,
                                   batch_stats=stats, tx=tx)
  return init


def train_step(state, batch, *, frozen: bool, schedule):
  """One step of softmax cross-entropy on one view; BN statistics kept if frozen."""
  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    if frozen:
      logits = state.apply_fn(variables, batch['image'], train=True)
      stats = state.batch_stats
    else:
      logits, updates = state.apply_fn(variables, batch['image'], train=True,
                                       mutable=['batch_stats'])
      stats = updates['batch_stats']
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label']).mean()
    return loss, (stats, logits)

  (loss, (stats, logits)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=stats)
  metrics = {'loss': loss,
             'train_top1': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
             'learning_rate': schedule(state.step)}
  return new_state, metrics


def eval_step(state, batch):
  """Correct top-1 / top-5 counts and the number of real examples in a batch."""
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  logits = state.apply_fn(variables, batch['image'], train=False)
  label, mask = batch['label'], batch['mask']
  k = min(5, logits.shape[-1])
  top = jax.lax.top_k(logits, k)[1]
  correct = top == label[:, None]
  return {'top1': jnp.sum(correct[:, 0] & mask),
          'top5': jnp.sum(jnp.any(correct, axis=1) & mask),
          'count': jnp.sum(mask)}


class Evaluator:
  """Top-1 (and top-5 with more than 5 classes) on `config.data.eval_split`."""

  def __init__(self, config, mesh, num_classes: int):
    self.config, self.mesh, self.num_classes = config, mesh, num_classes
    self.local_batch = parallel.check_batch_size(config.eval.batch_size, mesh)
    self._step = jax.jit(eval_step, in_shardings=(
        parallel.replicated(mesh), parallel.data_sharded(mesh)),
                         out_shardings=parallel.replicated(mesh))

  def __call__(self, state) -> dict:
    totals = None
    for batch in sources.eval_batches(
        self.config, self.config.data.eval_split, self.local_batch):
      counts = self._step(state, parallel.host_to_global(batch, self.mesh))
      totals = counts if totals is None else jax.tree.map(jnp.add, totals,
                                                          counts)
    totals = parallel.to_host(totals)
    out = {'test_top1': float(totals['top1'] / totals['count'])}
    if self.num_classes > 5:
      out['test_top5'] = float(totals['top5'] / totals['count'])
    logging.info('Test accuracy on %s: %s', self.config.data.eval_split,
                 ', '.join(f'{k} {100 * v:.2f}%' for k, v in out.items()))
    return out


def make_train_step(mesh, frozen: bool, schedule):
  """`train_step` jitted over the mesh: batch sharded, state replicated and donated."""
  return jax.jit(
      functools.partial(train_step, frozen=frozen, schedule=schedule),
      in_shardings=(parallel.replicated(mesh), parallel.data_sharded(mesh)),
      out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
      donate_argnums=0)


def _tree_equal(a, b) -> bool:
  same = jax.tree.map(lambda x, y: jnp.array_equal(x, y), a, b)
  return all(bool(x) for x in jax.tree.leaves(same))


def check_frozen(state, backbone) -> bool:
  """True if the probe's backbone is bit-identical to `backbone` (params, stats).

  Raises:
    RuntimeError: it changed (a bug, never expected).
  """
  unchanged = (_tree_equal(state.params['backbone'], backbone[0]) and
               _tree_equal(state.batch_stats['backbone'], backbone[1]))
  if not unchanged:
    raise RuntimeError('The frozen backbone changed during the linear probe.')
  logging.info('Backbone bit-identical to the pretrained checkpoint: yes.')
  return unchanged


def check_config(config: ml_collections.ConfigDict):
  """Raises ValueError, saying what to set, for settings classify cannot run."""
  if config.mode not in MODES:
    raise errors.ConfigError(f'classify runs modes {MODES}, got {config.mode!r}.')
  dc, cc = config.data, config.classifier
  if dc.augment_on != 'host' or dc.resident:
    # The train step here neither crops nor normalises uint8 device batches.
    raise errors.ConfigError(
        'linear/finetune train on host-augmented batches: pass '
        '--config.data.augment_on=host --config.data.resident=False (got '
        f'augment_on={dc.augment_on!r}, resident={dc.resident}).')
  if not 0.0 < cc.label_fraction <= 1.0:
    raise errors.ConfigError('classifier.label_fraction must be in (0, 1], got '
                     f'{cc.label_fraction}.')
  if cc.from_scratch:
    if config.mode != 'finetune':
      raise errors.ConfigError('classifier.from_scratch=True trains the backbone: use '
                       f'--config.mode=finetune (got {config.mode!r}).')
    if config.pretrained.workdir:
      raise errors.ConfigError(
          'classifier.from_scratch=True starts from random weights, but '
          f'pretrained.workdir={config.pretrained.workdir!r} names a '
          'pretraining run: drop one of the two.')


def load_backbone(config: ml_collections.ConfigDict, workdir: str, mesh):
  """(model config, backbone module, (params, BN statistics) or None).

  From scratch: `config.model`'s backbone and None (random initialisation);
  else the pretraining run's network and weights.
  """
  if config.classifier.from_scratch:
    logging.info('From scratch: the backbone of config.model starts from '
                 'random weights (seed %d).', config.seed)
    return config.model, simsiam.create_model(config.model).backbone, None
  saved, pre_model, pre_state = pretrained.load(config, workdir, mesh)
  differ = checkpointing.config_mismatches(saved.to_dict(), config)
  if differ:  # harmless here, but a scratch run of this config is unmatched
    logging.warning('The pretrained network differs from this config\'s '
                    'model (%s); a from_scratch run of this config would '
                    'train another network.', '; '.join(differ))
  weights = (pre_state.params['backbone'], pre_state.batch_stats['backbone'])
  return saved.model, pre_model.backbone, weights


def train_subset(config: ml_collections.ConfigDict, workdir: str):
  """The labelled subset (sorted indices into the train split), or None: all.

  Logs its size and class counts and records it in `workdir`/label_subset.json.
  """
  picked = sources.label_subset(config)
  if picked is None:
    return None
  indices, labels = picked
  counts = np.bincount(labels, minlength=sources.num_classes(config))
  cc = config.classifier
  logging.info('Labelled subset: %d examples (fraction %g, label_seed %d), '
               'per class %s.', len(indices), cc.label_fraction,
               cc.label_seed, counts.tolist())
  if len(indices) < config.batch_size:
    raise errors.ConfigError(
        f'The labelled subset has {len(indices)} examples, fewer than '
        f'batch_size={config.batch_size}: lower --config.batch_size or raise '
        '--config.classifier.label_fraction.')
  if jax.process_index() == 0:
    record = {'label_fraction': cc.label_fraction, 'label_seed': cc.label_seed,
              'num_examples': len(indices), 'class_counts': counts.tolist(),
              'indices': indices.tolist()}
    workdir_lib.write_atomic(epath.Path(workdir) / SUBSET_FILE,
                             json.dumps(record))
  return indices


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the linear head (or fine-tunes) and scores the test split.

  Writes checkpoints, metrics, plots and summary.json ({mode}_top1, and
  {mode}_top5 with more than 5 classes) to `workdir`; resumes from it.

  Raises:
    pretrained.PretrainedNotFound: `config.pretrained` names no checkpoint.
    RuntimeError: the frozen backbone changed (a bug, never expected).
  """
  check_config(config)
  frozen = config.mode == 'linear'
  mesh = parallel.create_mesh()
  model_config, backbone_module, backbone = load_backbone(config, workdir,
                                                          mesh)
  # Record the backbone this run holds, so its checkpoints validate on resume.
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model = model_config
  run = loop.setup(config, workdir, mesh)

  # A resume on other labels or weights was refused by loop.setup.
  ckpt = checkpointing.Checkpointer(workdir, config)

  num_examples, image_shape = sources.describe(config)
  num_classes = sources.num_classes(config)
  subset = train_subset(config, workdir)
  if subset is not None:
    num_examples = len(subset)  # epochs are passes over the labelled subset
  steps_per_epoch, num_train_steps = sources.num_steps(config, num_examples)
  model = Classifier(backbone_module, num_classes, frozen,
                     config.classifier.head_init_std)
  tx, schedule = create_optimizer(config, steps_per_epoch, num_train_steps,
                                  frozen)
  init = state_initializer(model, tx, image_shape)
  state = state_lib.restore_or_create(ckpt, init, mesh,
                                      rngs.key(config.seed, 'init'),
                                      *(backbone or ()))
  if (done := loop.already_finished(workdir, state, num_train_steps)):
    return done
  train_iter = sources.create_train_iterator(
      config, run.local_batch, parallel.step_of(state), views=1,
      subset=subset)
  step_fn = make_train_step(mesh, frozen, schedule)
  logging.info('%s of the ResNet-%d backbone%s: %d classes, %d training '
               'examples (%d steps an epoch), steps %d-%d of global batch %d.',
               'Linear probe' if frozen else 'Fine-tuning', config.model.depth,
               ' from scratch' if backbone is None else '', num_classes,
               num_examples, steps_per_epoch, parallel.step_of(state),
               num_train_steps, config.batch_size)

  writer = loop.create_writer(workdir, run, parallel.step_of(state))
  evaluator = Evaluator(config, mesh, num_classes)
  eval_epochs = config.classifier.eval_every_epochs

  def at_epoch_end(step, epoch, state):
    if not (eval_epochs > 0 and epoch % eval_epochs == 0):
      return False
    writer.write_scalars(step, evaluator(state))
    return True

  state, last, progress = loop.fit(
      config, state, train_iter, step_fn, mesh=mesh, ckpt=ckpt, writer=writer,
      steps_per_epoch=steps_per_epoch, num_train_steps=num_train_steps,
      at_epoch_end=at_epoch_end)
  del train_iter
  with preemption.sigterm_is_preemption('the final evaluation',
                                        ckpt.directory):
    return _finish(config, workdir, writer, state, progress, evaluator,
                   backbone, num_train_steps=num_train_steps,
                   steps_per_epoch=steps_per_epoch,
                   num_examples=num_examples, last=last)


def _finish(config, workdir, writer, state, progress, evaluator, backbone, *,
            num_train_steps, steps_per_epoch, num_examples, last):
  """Scores the test split and writes the summary."""
  frozen = config.mode == 'linear'
  scores = evaluator(state)
  writer.write_scalars(parallel.step_of(state), scores)
  results = {'pretrained': config.pretrained.workdir,
             'from_scratch': config.classifier.from_scratch,
             'label_fraction': config.classifier.label_fraction,
             'num_train_examples': num_examples,
             **{k.replace('test', config.mode): v for k, v in scores.items()},
             **last}
  if frozen:
    results['backbone_unchanged'] = check_frozen(state, backbone)
  return loop.finish(workdir, writer, state, progress,
                     num_train_steps=num_train_steps,
                     steps_per_epoch=steps_per_epoch, **results)
