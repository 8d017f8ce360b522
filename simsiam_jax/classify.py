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
"""

import functools
import time

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from simsiam_jax import checkpointing
from simsiam_jax import metrics_io
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import pretrained
from simsiam_jax import train
from simsiam_jax.data import input_pipeline

MODES = ('linear', 'finetune')


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
  """(rng, backbone params, backbone BN statistics) -> TrainState."""
  def init(rng, backbone_params, backbone_stats):
    x = jnp.zeros((2, *image_shape), jnp.float32)
    variables = model.init(rng, x, train=False)
    params = {**variables['params'], 'backbone': backbone_params}
    return train.TrainState.create(
        apply_fn=model.apply, params=params,
        batch_stats={'backbone': backbone_stats}, tx=tx)
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
    self.local_batch = (parallel.check_batch_size(config.knn.batch_size, mesh))
    self._step = jax.jit(eval_step, in_shardings=(
        parallel.replicated(mesh), parallel.data_sharded(mesh)),
                         out_shardings=parallel.replicated(mesh))

  def __call__(self, state) -> dict:
    totals = None
    for batch in input_pipeline.eval_batches(
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


def _tree_equal(a, b) -> bool:
  same = jax.tree.map(lambda x, y: jnp.array_equal(x, y), a, b)
  return all(bool(x) for x in jax.tree.leaves(same))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the linear head (or fine-tunes) and scores the test split.

  Writes checkpoints, metrics, plots and summary.json ({mode}_top1, and
  {mode}_top5 with more than 5 classes) to `workdir`; resumes from it.

  Raises:
    pretrained.PretrainedNotFound: `config.pretrained` names no checkpoint.
    RuntimeError: the frozen backbone changed (a bug, never expected).
  """
  if config.mode not in MODES:
    raise ValueError(f'classify runs modes {MODES}, got {config.mode!r}.')
  frozen = config.mode == 'linear'
  mesh = parallel.create_mesh()
  local_batch = parallel.check_batch_size(config.batch_size, mesh)
  saved, pre_model, pre_state = pretrained.load(config, workdir, mesh)
  # Record the backbone this run holds, so its checkpoints validate on resume.
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model = saved.model
  if jax.process_index() == 0:
    train.prepare_workdir(workdir, config)

  num_examples, image_shape = input_pipeline.describe(config)
  num_classes = input_pipeline.num_classes(config)
  steps_per_epoch, num_train_steps = train.num_steps(config, num_examples)
  model = Classifier(pre_model.backbone, num_classes, frozen,
                     config.classifier.head_init_std)
  tx, schedule = create_optimizer(config, steps_per_epoch, num_train_steps,
                                  frozen)
  init = state_initializer(model, tx, image_shape)
  rng = jax.random.key(config.seed)
  backbone = (pre_state.params['backbone'], pre_state.batch_stats['backbone'])
  del pre_state
  ckpt = checkpointing.Checkpointer(workdir, config)
  state = train.restore_or_init(ckpt, init, mesh, rng, *backbone)
  train_iter = input_pipeline.create_train_iterator(
      config, local_batch, parallel.step_of(state), views=1)
  step_fn = jax.jit(
      functools.partial(train_step, frozen=frozen, schedule=schedule),
      in_shardings=(parallel.replicated(mesh), parallel.data_sharded(mesh)),
      out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
      donate_argnums=0)
  logging.info('%s of the ResNet-%d backbone: %d classes, steps %d-%d of '
               'global batch %d.', 'Linear probe' if frozen else 'Fine-tuning',
               config.model.depth, num_classes, parallel.step_of(state),
               num_train_steps, config.batch_size)

  writer = metrics_io.create_writer(workdir, jax.process_index() == 0)
  evaluator = Evaluator(config, mesh, num_classes)
  eval_epochs = config.classifier.eval_every_epochs

  def at_epoch_end(step, epoch, state):
    if not (eval_epochs > 0 and epoch % eval_epochs == 0):
      return False
    writer.write_scalars(step, evaluator(state))
    return True

  state, last, progress = train.fit(
      config, state, train_iter, step_fn, mesh=mesh, ckpt=ckpt, writer=writer,
      steps_per_epoch=steps_per_epoch, num_train_steps=num_train_steps,
      at_epoch_end=at_epoch_end)
  del train_iter
  scores = evaluator(state)
  final_step = parallel.step_of(state)
  writer.write_scalars(final_step, scores)
  summary = {'step': final_step, 'num_train_steps': num_train_steps,
             'epochs': final_step / steps_per_epoch,
             'wall_time_s': time.perf_counter() - progress.t_start,
             'pretrained': config.pretrained.workdir,
             **{k.replace('test', config.mode): v for k, v in scores.items()},
             **last}
  if frozen:
    unchanged = (_tree_equal(state.params['backbone'], backbone[0]) and
                 _tree_equal(state.batch_stats['backbone'], backbone[1]))
    summary['backbone_unchanged'] = unchanged
    if not unchanged:
      raise RuntimeError('The frozen backbone changed during the linear probe.')
    logging.info('Backbone bit-identical to the pretrained checkpoint: yes.')
  train.write_summary(workdir, summary, writer)
  return summary
