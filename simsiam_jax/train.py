"""SimSiam pretraining: train state, the sharded train step and the loop.

`train_and_evaluate(config, workdir)` is what the CLI, tests and notebooks
call. Nothing here imports TensorFlow: with an in-memory source the trainer
runs where TensorFlow is absent.
"""

import functools
import json
import time
from typing import Any

from absl import logging
from etils import epath
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from simsiam_jax import checkpointing
from simsiam_jax import losses
from simsiam_jax import metrics_io
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import plot
from simsiam_jax.data import input_pipeline
from simsiam_jax.evaluation import collapse
from simsiam_jax.models import simsiam

SUMMARY_FILE = 'summary.json'


class WorkdirError(OSError):
  """The workdir cannot be created or written."""


class TrainState(train_state.TrainState):
  """Params, optimiser state and step, plus BatchNorm running statistics."""
  batch_stats: Any


def train_state_initializer(model: simsiam.SimSiam,
                            tx: optax.GradientTransformation,
                            image_shape: tuple[int, int, int]):
  """rng -> initial TrainState (a pure function, for jit and eval_shape)."""
  def init(rng):
    x = jnp.zeros((2, *image_shape), jnp.float32)
    variables = model.init(rng, x, x, train=True)
    return TrainState.create(apply_fn=model.apply, params=variables['params'],
                             batch_stats=variables['batch_stats'], tx=tx)
  return init


def init_replicated(init, mesh: jax.sharding.Mesh, *args):
  """`init(*args)` run directly into the replicated layout on the mesh.

  Jitted, with the non-partitionable threefry as in `simsiam.init_variables`:
  on CPU the partitionable one compiles the per-parameter random draws about
  4x slower (9 s vs 2 s for the tiny model) and buys nothing when replicated.
  """
  with jax.threefry_partitionable(False):
    return jax.jit(init, out_shardings=parallel.replicated(mesh))(*args)


def abstract_replicated(init, mesh: jax.sharding.Mesh, *args):
  """Shapes, dtypes and (replicated) shardings of `init(*args)`; nothing allocated."""
  sharding = parallel.replicated(mesh)
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      jax.eval_shape(init, *args))


def restore_or_init(checkpointer: checkpointing.Checkpointer, init, mesh,
                    *args):
  """The latest checkpoint restored straight into the sharded layout, else `init(*args)`."""
  state = checkpointer.restore(abstract_replicated(init, mesh, *args))
  if state is None:
    logging.info('No checkpoint in %s: starting from step 0.',
                 checkpointer.directory)
    return init_replicated(init, mesh, *args)
  logging.info('Resumed from the checkpoint at step %d in %s.',
               parallel.step_of(state), checkpointer.directory)
  return state


def create_train_state(model: simsiam.SimSiam, tx: optax.GradientTransformation,
                       rng: jax.Array, image_shape: tuple[int, int, int],
                       mesh: jax.sharding.Mesh) -> TrainState:
  """A new SimSiam state, initialised directly in its replicated layout."""
  return init_replicated(train_state_initializer(model, tx, image_shape),
                         mesh, rng)


def abstract_train_state(model, tx, rng, image_shape, mesh) -> TrainState:
  """The state's shapes, dtypes and (replicated) shardings; nothing allocated."""
  return abstract_replicated(train_state_initializer(model, tx, image_shape),
                             mesh, rng)


def restore_or_create(checkpointer: checkpointing.Checkpointer, model, tx, rng,
                      image_shape, mesh) -> TrainState:
  """The latest checkpoint restored straight into the sharded layout, else a new state."""
  return restore_or_init(checkpointer,
                         train_state_initializer(model, tx, image_shape),
                         mesh, rng)


def train_step(state: TrainState, batch: dict, *,
               loss_config: ml_collections.ConfigDict,
               schedule: optax.Schedule, prepare=None):
  """One SGD step on a global batch of two views.

  Args:
    state: the replicated train state.
    batch: {'view1', 'view2': [B, H, W, C]}, sharded along B; or what
      `prepare` turns into that.
    loss_config: `config.loss` (stop_gradient, symmetric, similarity).
    schedule: learning rate per step, for logging.
    prepare: None, or (batch, step) -> views: on-device augmentation.

  Returns:
    (new state, metrics of this step: scalars).
  """
  if prepare is not None:
    batch = prepare(batch, state.step)
  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    (z1, z2, p1, p2), updates = state.apply_fn(
        variables, batch['view1'], batch['view2'], train=True,
        mutable=['batch_stats'])
    loss = losses.simsiam_loss(
        p1, p2, z1, z2, stop_gradient=loss_config.stop_gradient,
        symmetric=loss_config.symmetric, similarity=loss_config.similarity)
    return loss, (updates['batch_stats'], z1)

  (loss, (batch_stats, z1)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  metrics = {
      'loss': loss,
      'collapse_std': losses.collapse_std(z1),
      'learning_rate': schedule(state.step),
      'grad_norm': optax.global_norm(grads),
  }
  return new_state, metrics


def make_train_step(config: ml_collections.ConfigDict, mesh, schedule,
                    prepare=None):
  """The train step jitted over the mesh: batch sharded, state replicated and donated."""
  step = functools.partial(train_step, loss_config=config.loss,
                           schedule=schedule, prepare=prepare)
  return jax.jit(step,
                 in_shardings=(parallel.replicated(mesh),
                               parallel.data_sharded(mesh)),
                 out_shardings=(parallel.replicated(mesh),
                                parallel.replicated(mesh)),
                 donate_argnums=0)


def num_steps(config: ml_collections.ConfigDict, num_train_examples: int):
  """(steps_per_epoch, num_train_steps) from the config and the data size."""
  steps_per_epoch = num_train_examples // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(
        f'batch_size={config.batch_size} is larger than the training split '
        f'({num_train_examples} examples): lower --config.batch_size.')
  if config.num_train_steps > 0:
    return steps_per_epoch, config.num_train_steps
  return steps_per_epoch, int(config.num_epochs * steps_per_epoch)


class Progress:
  """Images/s, steps/s and ETA from wall time, the first (compiling) step apart."""

  def __init__(self, num_train_steps: int, global_batch_size: int):
    self.num_train_steps = num_train_steps
    self.batch = global_batch_size
    self.t_start = time.perf_counter()
    self.first_step_s = None
    self._mark = None  # (step, time) of the last report

  def first_step_done(self, step: int):
    now = time.perf_counter()
    self.first_step_s = now - self.t_start
    self._mark = (step, now)

  def pause_done(self, step: int):
    """Restarts the throughput window after an evaluation at `step`."""
    self._mark = (step, time.perf_counter())

  def rate(self, step: int) -> dict:
    """Throughput since the last call; resets the window."""
    last_step, last_t = self._mark
    now = time.perf_counter()
    steps_per_s = (step - last_step) / max(now - last_t, 1e-9)
    self._mark = (step, now)
    eta = (self.num_train_steps - step) / max(steps_per_s, 1e-9)
    return {'steps_per_sec': steps_per_s,
            'images_per_sec': steps_per_s * self.batch, 'eta_s': eta}


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


def _check_finite(losses_in_window: list, first_step: int,
                  ckpt: checkpointing.Checkpointer):
  """Raises naming the first step whose loss is not finite and the last good checkpoint."""
  values = np.asarray(parallel.to_host(losses_in_window))
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    step = first_step + int(bad[0])
    ckpt.wait()
    good = ckpt.latest_step()
    where = (f'the last good checkpoint is step {good} in {ckpt.directory}'
             if good is not None else 'no checkpoint was saved yet')
    raise FloatingPointError(
        f'Loss is {values[bad[0]]} at step {step}: training stopped and this '
        f'state is not saved; {where}. Lower optim.base_lr, use float32, or '
        'check the input data.')


def fit(config, state, train_iter, step_fn, *, mesh, ckpt, writer,
        steps_per_epoch: int, num_train_steps: int, after_log=None,
        after_save=None, at_epoch_end=None):
  """Runs `step_fn` from `state.step` to `num_train_steps`: the shared loop.

  Logs every `config.log_every_steps` (a non-finite loss stops the run
  before anything is saved), checkpoints every `config.checkpoint_every_steps`
  and at the end, and on SIGTERM or a preemption notice saves and raises
  `checkpointing.Preempted`.

  Args:
    after_log: called as (step, averaged metrics) after each log.
    after_save: called as (step) after each checkpoint.
    at_epoch_end: called as (step, epoch, state) at each epoch's end except
      the last; returns True if it paused training (evaluation).

  Returns:
    (final state, the last logged metrics, the Progress clock).
  """
  start_step = parallel.step_of(state)
  report = (_report_progress(num_train_steps, writer)
            if jax.process_index() == 0 else None)
  watcher = checkpointing.PreemptionWatcher()
  progress = Progress(num_train_steps, config.batch_size)
  window, window_start = [], start_step
  last = {}
  try:
    for step in range(start_step, num_train_steps):
      batch = parallel.host_to_global(next(train_iter), mesh)
      state, metrics = step_fn(state, batch)
      window.append(metrics)
      if step == start_step:
        jax.block_until_ready(metrics)
        progress.first_step_done(step + 1)
        logging.info('First step (compile + run) took %.1f s.',
                     progress.first_step_s)
      if report is not None:
        report(step + 1)
      done = step + 1 == num_train_steps
      stop = watcher.should_stop(step + 1, ckpt)
      if (step + 1) % config.log_every_steps == 0 or done:
        _check_finite([m['loss'] for m in window], window_start + 1, ckpt)
        last = _log_window(writer, window, progress, step + 1, steps_per_epoch)
        window, window_start = [], step + 1
        if after_log:
          after_log(step + 1, last)
      if (step + 1) % config.checkpoint_every_steps == 0 or done or stop:
        # Never save a state whose loss went non-finite.
        _check_finite([m['loss'] for m in window], window_start + 1, ckpt)
        ckpt.save(step + 1, state, force=True)
        if after_save:
          after_save(step + 1)
      if stop:
        ckpt.wait()
        raise checkpointing.Preempted(
            f'Preempted: saved step {step + 1} in {ckpt.directory}; run the '
            'same command to resume.')
      if (at_epoch_end and not done and (step + 1) % steps_per_epoch == 0 and
          at_epoch_end(step + 1, (step + 1) // steps_per_epoch, state)):
        progress.pause_done(step + 1)
  finally:
    watcher.close()
    ckpt.wait()
  return state, last, progress


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Pretrains SimSiam as `config` says; resumes from `workdir` if it has checkpoints.

  Writes logs, checkpoints and summary.json to `workdir`.

  Returns:
    The final summary (also in `workdir/summary.json`).

  Raises:
    checkpointing.Preempted: after saving, on SIGTERM or a preemption notice.
    FloatingPointError: on a non-finite loss; that state is not saved.
  """
  mesh = parallel.create_mesh()
  local_batch = parallel.check_batch_size(config.batch_size, mesh)
  is_chief = jax.process_index() == 0
  if is_chief:
    prepare_workdir(workdir, config)

  resident_set = None
  if config.data.resident:
    from simsiam_jax.data import resident  # pylint: disable=g-import-not-at-top
    resident_set = resident.ResidentTrainSet(config, mesh)
    num_examples, image_shape = (resident_set.num_examples,
                                 resident_set.image_shape)
  else:
    num_examples, image_shape = input_pipeline.describe(config)
  steps_per_epoch, num_train_steps = num_steps(config, num_examples)
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, steps_per_epoch,
                                        num_train_steps)
  ckpt = checkpointing.Checkpointer(workdir, config)
  state = restore_or_create(ckpt, model, tx, jax.random.key(config.seed),
                            image_shape, mesh)
  start_step = parallel.step_of(state)
  if resident_set is not None:
    train_iter = resident_set.batches()  # the step reads it by state.step
  else:
    train_iter = input_pipeline.create_train_iterator(config, local_batch,
                                                      start_step)
  p_train_step = make_train_step(
      config, mesh, schedule,
      _device_augmentation(config, mesh, steps_per_epoch))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('SimSiam ResNet-%d: %.2fM parameters; steps %d-%d of global '
               'batch %d (%d per process, %d per device); %d steps per epoch.',
               config.model.depth, num_params / 1e6, start_step,
               num_train_steps, config.batch_size, local_batch,
               config.batch_size // mesh.devices.size, steps_per_epoch)

  writer = metrics_io.create_writer(workdir, is_chief)
  knn_monitor = _knn_monitor(config, model, mesh)
  knn_epochs = config.knn.every_epochs
  # Raw pixels and the random-init network under the same kNN: the numbers
  # a SimSiam score has to beat (cached per data set, computed once).
  baselines = knn_monitor.baselines() if knn_monitor else {}
  if baselines:
    writer.write_scalars(start_step, baselines)
  if knn_monitor and config.knn.at_start and start_step == 0:
    writer.write_scalars(0, {'knn_top1': knn_monitor(state)})
  cc = config.collapse
  collapse_watch = collapse.CollapseWatch(cc.threshold, cc.patience_steps,
                                          cc.stop)

  def at_epoch_end(step, epoch, state):
    if not (knn_monitor and knn_epochs > 0 and epoch % knn_epochs == 0):
      return False
    top1 = knn_monitor(state)
    writer.write_scalars(step, {'knn_top1': top1})
    ckpt.save_if_best(step, state, top1)
    return True

  state, last, progress = fit(
      config, state, train_iter, p_train_step, mesh=mesh, ckpt=ckpt,
      writer=writer, steps_per_epoch=steps_per_epoch,
      num_train_steps=num_train_steps,
      after_log=lambda step, m: collapse_watch.update(step, m['collapse_std']),
      after_save=collapse_watch.checkpoint_saved, at_epoch_end=at_epoch_end)

  # Stop the input pipeline: its threads would compete with the final
  # evaluation and with TensorFlow's summary writes.
  del train_iter
  final_step = parallel.step_of(state)
  if knn_monitor:
    last['knn_top1'] = knn_monitor(state)
    writer.write_scalars(final_step, {'knn_top1': last['knn_top1']})
    ckpt.save_if_best(final_step, state, last['knn_top1'])
    ckpt.wait()

  summary = {'step': final_step, 'num_train_steps': num_train_steps,
             'epochs': final_step / steps_per_epoch,
             'first_step_s': progress.first_step_s,
             'wall_time_s': time.perf_counter() - progress.t_start, **last,
             **baselines}
  write_summary(workdir, summary, writer)
  return summary


def write_summary(workdir: str, summary: dict, writer):
  """Flushes the metric writers; process 0 writes summary.json and the plots."""
  t = time.perf_counter()
  writer.flush()
  logging.info('Metric writers flushed in %.1f s.', time.perf_counter() - t)
  if jax.process_index() == 0:
    (epath.Path(workdir) / SUMMARY_FILE).write_text(
        json.dumps(summary, indent=2))
    _write_plots(workdir)


def _write_plots(workdir: str):
  try:
    paths = plot.plot_run(workdir)
  except ImportError as e:  # matplotlib is optional for training
    logging.warning('No plots written (%s).', e)
    return
  logging.info('Plots: %s', ', '.join(paths))


_NOT_SHOWN = ('grad_norm', 'steps_per_sec', 'images_per_sec', 'eta_s')


def _log_window(writer, window, progress, step, steps_per_epoch) -> dict:
  """Averages the window's metrics, writes them and prints the progress line."""
  last = {k: float(np.mean(parallel.to_host([m[k] for m in window])))
          for k in window[0]}
  last.update(progress.rate(step))
  writer.write_scalars(step, {**last, 'epoch': step / steps_per_epoch})
  names = sorted((k for k in last if k not in _NOT_SHOWN),
                 key=lambda k: (k != 'loss', k))  # loss first
  shown = ' | '.join(f'{k} {last[k]:.4g}' for k in names)
  logging.info('step %d/%d (epoch %.2f) | %s | %.0f img/s | ETA %s', step,
               progress.num_train_steps, step / steps_per_epoch, shown,
               last['images_per_sec'], _format_eta(last['eta_s']))
  return last


def _device_augmentation(config, mesh, steps_per_epoch: int):
  """The in-step augmentation when `data.augment_on='device'`, else None."""
  if config.data.augment_on == 'host' and not config.data.resident:
    return None
  from simsiam_jax.data import resident  # pylint: disable=g-import-not-at-top
  return resident.prepare_fn(config, mesh, steps_per_epoch)


def _knn_monitor(config, model, mesh):
  """The kNN monitor, or None when it is off."""
  if config.knn.every_epochs < 0:
    return None
  from simsiam_jax.evaluation import monitor  # pylint: disable=g-import-not-at-top
  return monitor.KnnMonitor(config, model, mesh)


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict):
  """Creates the workdir (a local path or gs://...) and saves the config there.

  Raises:
    WorkdirError: it cannot be created or written.
  """
  try:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / 'config.json').write_text(config.to_json_best_effort(indent=2))
  except OSError as e:
    raise WorkdirError(f'Cannot write to workdir {workdir!r} ({e}). Pass a '
                       'writable --workdir with free space.') from e


def _report_progress(num_train_steps: int, writer):
  """clu's ReportProgress (steps/s and ETA to TensorBoard) when clu imports."""
  try:
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return periodic_actions.ReportProgress(num_train_steps=num_train_steps,
                                         writer=writer, every_secs=60.0)
