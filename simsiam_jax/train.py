"""SimSiam pretraining: the sharded train step and `train_and_evaluate`.

`train_and_evaluate(config, workdir)` is what the CLI and tests call: data
source (data/sources.py) -> state (state.py) -> step (here) -> loop
(loop.py) -> checkpoints (checkpointing.py) and the kNN monitor
(evaluation/monitor.py). Nothing here imports TensorFlow: with an in-memory
source the trainer runs where TensorFlow is absent.
"""

import functools

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import optax

from simsiam_jax import checkpointing
from simsiam_jax import losses
from simsiam_jax import loop
from simsiam_jax.methods import base
from simsiam_jax.methods import registry
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import preemption
from simsiam_jax import rngs
from simsiam_jax import state as state_lib
from simsiam_jax.data import sources
from simsiam_jax.evaluation import collapse
from simsiam_jax.evaluation import monitor
from simsiam_jax.evaluation import spectrum
from simsiam_jax.models import simsiam


# Metrics a step measures only when its window is logged (NaN at the other
# steps): the spread of the batch's z needs a decomposition.
SAMPLED_METRICS = ('batch_z_rank', 'batch_z_pr')


def train_step(state: state_lib.TrainState, batch: dict, *,
               method: base.Method, config: ml_collections.ConfigDict,
               schedule: optax.Schedule, augmentation=None,
               log_every: int = 1, num_train_steps: int = -1,
               steps_per_epoch: int = 0):
  """One SGD step on a global batch of two views.

  Args:
    state: the replicated train state.
    batch: {'view1', 'view2': [B, H, W, C]}, sharded along B; or what
      what `augmentation` turns into that.
    method: `registry.get(config.method)`: the loss of the two views'
      outputs (SimSiam's: `config.loss`'s stop-gradient, symmetry and
      similarity).
    config: the run's config, for the method's fields.
    schedule: learning rate per step, for logging.
    augmentation: None, or (batch, step) -> views: the in-step augmentation
      (`sources.TrainSource.augmentation`).
    log_every, num_train_steps: the steps that end a log window, where the
      `SAMPLED_METRICS` of the global batch's z are measured.
    steps_per_epoch: for the method's `out['epoch']` (0: epoch 0 always).

  Returns:
    (new state, metrics of this step: scalars).
  """
  if augmentation is not None:
    batch = augmentation(batch, state.step)
  targets = _target_projections(state, batch) if method.target else {}
  epoch = (state.step / steps_per_epoch if steps_per_epoch > 0
           else jnp.float32(0.0))

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    (z1, z2, p1, p2), updates = state.apply_fn(
        variables, batch['view1'], batch['view2'], train=True,
        mutable=['batch_stats'])
    out = {'z1': z1, 'z2': z2, 'p1': p1, 'p2': p2, 'extra': state.extra,
           'params': params, 'epoch': epoch, **targets}
    return method.loss(out, config), (updates['batch_stats'], out)

  (loss, (batch_stats, out)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  del out['params']
  z1 = out['z1']
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  new_state = new_state.replace(extra=method.next_extra(
      state.extra, new_state.params, out, state.step, config,
      num_train_steps))
  metrics = {
      'loss': loss,
      'collapse_std': losses.collapse_std(z1),
      'learning_rate': schedule(state.step),
      'grad_norm': optax.global_norm(grads),
      'param_norm': optax.global_norm(state.params),
  }
  logged = (((state.step + 1) % log_every == 0) |
            (state.step + 1 == num_train_steps))
  metrics.update(jax.lax.cond(
      logged, _batch_spread,
      lambda z: dict.fromkeys(SAMPLED_METRICS, jnp.float32(jnp.nan)), z1))
  return new_state, metrics


def _target_projections(state, batch) -> dict:
  """{'t1', 't2'}: the momentum target's z of each view, held constant.

  Its BN normalises with the batch's statistics, as the online network's
  (the running averages it would update are not kept).
  """
  variables = {'params': state.extra['target'],
               'batch_stats': state.batch_stats}
  out = {}
  for v in (1, 2):
    (_, z), _ = state.apply_fn(variables, batch[f'view{v}'], train=True,
                               method='represent', mutable=['batch_stats'])
    out[f't{v}'] = jax.lax.stop_gradient(z)
  return out


def _batch_spread(z: jax.Array) -> dict:
  spread = spectrum.spread(z)
  return {'batch_z_rank': spread['rank'], 'batch_z_pr': spread['pr']}


def make_train_step(config: ml_collections.ConfigDict, mesh, schedule,
                    augmentation=None, num_train_steps: int = -1,
                    steps_per_epoch: int = 0):
  """The train step jitted over the mesh: batch sharded, state replicated and donated."""
  step = functools.partial(train_step, method=registry.get(config.method),
                           config=config, schedule=schedule,
                           augmentation=augmentation,
                           log_every=config.log_every_steps,
                           num_train_steps=num_train_steps,
                           steps_per_epoch=steps_per_epoch)
  return jax.jit(step,
                 in_shardings=(parallel.replicated(mesh),
                               parallel.data_sharded(mesh)),
                 out_shardings=(parallel.replicated(mesh),
                                parallel.replicated(mesh)),
                 donate_argnums=0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Pretrains SimSiam as `config` says; resumes from `workdir` if it has checkpoints.

  Writes logs, checkpoints and summary.json to `workdir`.

  Returns:
    The final summary (also in `workdir/summary.json`).

  Raises:
    preemption.Preempted: after saving, on SIGTERM or a preemption notice.
    FloatingPointError: on a non-finite loss; that state is not saved.
  """
  run = loop.setup(config, workdir)
  mesh = run.mesh
  source = sources.make_train_source(config, mesh, run.local_batch)
  steps_per_epoch, num_train_steps = (source.steps_per_epoch,
                                      source.num_train_steps)
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, steps_per_epoch,
                                        num_train_steps)
  ckpt = checkpointing.Checkpointer(workdir, config)
  state = state_lib.restore_or_create(
      ckpt, state_lib.simsiam_initializer(model, tx, source.image_shape,
                                          registry.extra_init(config)),
      mesh, rngs.key(config.seed, 'init'))
  if (done := loop.already_finished(workdir, state, num_train_steps)):
    return done
  start_step = parallel.step_of(state)
  train_iter = source.batches(start_step)
  p_train_step = make_train_step(config, mesh, schedule, source.augmentation,
                                 num_train_steps, steps_per_epoch)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('SimSiam ResNet-%d: %.2fM parameters; steps %d-%d of global '
               'batch %d (%d per process, %d per device); %d steps per epoch.',
               config.model.depth, num_params / 1e6, start_step,
               num_train_steps, config.batch_size, run.local_batch,
               config.batch_size // mesh.devices.size, steps_per_epoch)

  writer = loop.create_writer(workdir, run, start_step)
  knn_monitor = _knn_monitor(config, model, mesh)
  knn_epochs = config.knn.every_epochs
  # Raw pixels and the random-init network under the same kNN: the numbers
  # a SimSiam score has to beat (cached per data set, computed once); the
  # spread of their features beside it.
  baselines = ({**knn_monitor.baselines(), **knn_monitor.spread_baselines()}
               if knn_monitor else {})
  if baselines:
    writer.write_scalars(start_step, baselines)
  if knn_monitor and config.knn.at_start and start_step == 0:
    writer.write_scalars(0, knn_monitor.evaluate(state))
  cc = config.collapse
  collapse_watch = collapse.CollapseWatch(cc.threshold, cc.patience_steps,
                                          cc.stop, cc.min_rank)

  def at_epoch_end(step, epoch, state):
    if not (knn_monitor and knn_epochs > 0 and epoch % knn_epochs == 0):
      return False
    result = knn_monitor.evaluate(state)
    writer.write_scalars(step, result)
    ckpt.save_if_best(step, state, result['knn_top1'])
    return True

  state, last, progress = loop.fit(
      config, state, train_iter, p_train_step, mesh=mesh, ckpt=ckpt,
      writer=writer, steps_per_epoch=steps_per_epoch,
      num_train_steps=num_train_steps,
      after_log=collapse_watch.update,
      after_save=collapse_watch.checkpoint_saved, at_epoch_end=at_epoch_end,
      sampled_metrics=SAMPLED_METRICS)

  # Stop the input pipeline: its threads would compete with the final
  # evaluation and with TensorFlow's summary writes.
  del train_iter
  with preemption.sigterm_is_preemption('the final evaluation',
                                        ckpt.directory):
    if knn_monitor:
      final_step = parallel.step_of(state)
      result = knn_monitor.evaluate(state)
      last.update(result)
      writer.write_scalars(final_step, result)
      ckpt.save_if_best(final_step, state, last['knn_top1'])
      ckpt.wait()
    return loop.finish(workdir, writer, state, progress,
                       num_train_steps=num_train_steps,
                       steps_per_epoch=steps_per_epoch, **last, **baselines)


def _knn_monitor(config, model, mesh):
  """The kNN monitor, or None when it is off."""
  if config.knn.every_epochs < 0:
    return None
  return monitor.KnnMonitor(config, model, mesh)
