"""The loop every training mode shares: set-up, `fit`, progress and the summary.

A mode (train.py: pretraining, classify.py: probe and fine-tuning) calls
`setup`, builds its state and step, runs `fit` and ends with `finish`.
"""

import dataclasses
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from simsiam_jax import checkpointing
from simsiam_jax import metrics_io
from simsiam_jax import parallel
from simsiam_jax import plot
from simsiam_jax import preemption
from simsiam_jax import workdir as workdir_lib


@dataclasses.dataclass
class Run:
  """What every mode sets up first."""
  mesh: jax.sharding.Mesh
  local_batch: int  # this process's share of config.batch_size
  is_chief: bool  # process 0: writes the workdir's files


def setup(config: ml_collections.ConfigDict, workdir: str,
          mesh: jax.sharding.Mesh | None = None) -> Run:
  """Mesh, batch split checked, and (process 0) the workdir with `config` in it."""
  mesh = parallel.create_mesh() if mesh is None else mesh
  local_batch = parallel.check_batch_size(config.batch_size, mesh)
  take_workdir(workdir, config)
  return Run(mesh, local_batch, jax.process_index() == 0)


class OtherProcessFailed(workdir_lib.WorkdirError):
  """Another process of this multi-host run could not take the workdir."""


def take_workdir(workdir: str, config: ml_collections.ConfigDict):
  """Process 0 prepares the workdir (`workdir.prepare`); all processes agree.

  The others then check that the lock they see is process 0's
  (`workdir.check_owner`). Whatever fails on one process stops every
  process here, with its own one-line error, instead of leaving the rest
  to wait in the next collective.
  """
  chief = jax.process_index() == 0
  run_id, error = 0, None
  if chief:
    try:
      run_id = workdir_lib.prepare(workdir, config)
    except Exception as e:  # pylint: disable=broad-except
      error = e
  if jax.process_count() == 1:
    if error is not None:
      raise error
    return
  chief_ok, run_id = (int(w) for w in multihost_utils.broadcast_one_to_all(
      np.array([error is None, run_id], np.int32)))
  if not chief and chief_ok:
    try:
      workdir_lib.check_owner(workdir, run_id)
    except workdir_lib.WorkdirError as e:
      error = e
  failed = multihost_utils.process_allgather(np.int32(error is not None))
  if error is not None:
    raise error
  if not chief_ok or failed.any():
    who = 0 if not chief_ok else int(np.flatnonzero(failed)[0])
    raise OtherProcessFailed(
        f'Process {who} could not take the workdir {workdir} (its log says '
        'why); this process stops with it.')


def create_writer(workdir: str, run: Run, start_step: int):
  """The metric writers of a run that starts (or resumes) at `start_step`."""
  return metrics_io.create_writer(workdir, run.is_chief, start_step)


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


def format_eta(seconds: float) -> str:
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


_param_norm = jax.jit(optax.global_norm)


class ParamCheck:
  """Refuses to let a non-finite or exploded state be saved.

  The loss of step k is computed before its update, so a finite loss does
  not make the updated state sane; this looks at the parameters themselves:
  their global norm must be finite and at most `max_growth` times the norm
  they started from (this run's first state, restored or new).
  """

  def __init__(self, state, max_growth: float, ckpt):
    self.start = float(parallel.to_host(_param_norm(state.params)))
    self.max_growth = max_growth
    self.ckpt = ckpt

  def __call__(self, state, step: int):
    """Raises FloatingPointError if `state` (at `step`) must not be saved."""
    norm = float(parallel.to_host(_param_norm(state.params)))
    if np.isfinite(norm) and norm <= self.max_growth * max(self.start, 1e-30):
      return
    what = (f'not finite ({norm})' if not np.isfinite(norm) else
            f'{norm:.3g}, {norm / self.start:.3g}x their start {self.start:.3g}'
            f' (checkpoint.max_param_norm_growth={self.max_growth:g})')
    self.ckpt.wait()
    good = self.ckpt.latest_step()
    where = (f'the last checkpoint, which passed the same check, is step '
             f'{good} in {self.ckpt.directory}' if good is not None else
             'no checkpoint was saved yet')
    raise FloatingPointError(
        f'The parameters diverged: their norm at step {step} is {what}. '
        f'Training stopped and this state is not saved; {where}. Lower '
        'optim.base_lr, use float32, or check the input data.')


def fit(config, state, train_iter, step_fn, *, mesh, ckpt, writer,
        steps_per_epoch: int, num_train_steps: int, after_log=None,
        after_save=None, at_epoch_end=None, sampled_metrics=()):
  """Runs `step_fn` from `state.step` to `num_train_steps`.

  Logs every `config.log_every_steps` (a non-finite loss stops the run
  before anything is saved; so do diverged parameters, `ParamCheck`, before
  every save), checkpoints every `config.checkpoint_every_steps`
  and at the end, and on SIGTERM or a preemption notice saves and raises
  `preemption.Preempted`.

  Args:
    after_log: called as (step, averaged metrics) after each log.
    after_save: called as (step) after each checkpoint.
    at_epoch_end: called as (step, epoch, state) at each epoch's end except
      the last; returns True if it paused training (evaluation).
    sampled_metrics: metrics the step measures at some steps only and
      reports as NaN at the others: a window logs the mean of its measured
      values (none measured: not logged).

  Returns:
    (final state, the last logged metrics, the Progress clock).
  """
  start_step = parallel.step_of(state)
  report = (_report_progress(num_train_steps, writer,
                             config.report_every_secs)
            if jax.process_index() == 0 else None)
  watcher = preemption.PreemptionWatcher()
  check_params = ParamCheck(state, config.checkpoint.max_param_norm_growth,
                            ckpt)
  progress = Progress(num_train_steps, config.batch_size)
  # Resumed inside a log window: its steps before the checkpoint.
  window = ckpt.read_window(start_step) if start_step else []
  window_start = start_step - len(window)
  last = {}
  try:
    for step in range(start_step, num_train_steps):
      batch = parallel.host_to_global(next(train_iter), mesh)
      if step == start_step:
        _compile_together(step_fn, state, batch)
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
        last = _log_window(writer, window, progress, step + 1,
                           steps_per_epoch, sampled_metrics)
        window, window_start = [], step + 1
        if after_log:
          after_log(step + 1, last)
      if (step + 1) % config.checkpoint_every_steps == 0 or done or stop:
        # Never save a state whose loss or parameters went wrong.
        _check_finite([m['loss'] for m in window], window_start + 1, ckpt)
        check_params(state, step + 1)
        ckpt.save(step + 1, state, force=True)
        ckpt.save_window(step + 1, window)
        if after_save:
          after_save(step + 1)
      if stop:
        ckpt.wait()
        raise preemption.Preempted(
            f'Preempted: saved step {step + 1} in {ckpt.directory}; run the '
            'same command to resume.')
      if (at_epoch_end and not done and (step + 1) % steps_per_epoch == 0 and
          at_epoch_end(step + 1, (step + 1) // steps_per_epoch, state)):
        progress.pause_done(step + 1)
  finally:
    signalled = watcher.signalled()
    watcher.close()
    ckpt.wait()
  if signalled:
    # SIGTERM after the last step's check: its save is complete (waited
    # for above); the rerun does what is left (the final evaluation).
    raise preemption.Preempted(
        f'Preempted after the last step: saved step {parallel.step_of(state)} '
        f'in {ckpt.directory}; run the same command to finish.')
  return state, last, progress


def _compile_together(step_fn, state, batch):
  """With several processes: compile the step, then start it together.

  Compile times differ between hosts; the first step's collectives (CPU's
  gloo) give up on a process that comes 30 s late. The jit cache keeps the
  executable for the step's own call.
  """
  if jax.process_count() == 1 or not hasattr(step_fn, 'lower'):
    return
  step_fn.lower(state, batch).compile()
  parallel.barrier(f'simsiam_jax first step {parallel.step_of(state)}')


def already_finished(workdir: str, state, num_train_steps: int):
  """The summary of a run that has done its steps, or None: train on.

  Asked to run again, a finished run says so and leaves its summary alone;
  a larger step budget (num_epochs or num_train_steps raised) trains on.
  """
  step = parallel.step_of(state)
  summary = (workdir_lib.read_summary(workdir) if step >= num_train_steps
             else None)
  if summary is not None:
    logging.info('The run in %s is finished (step %d of %d): nothing to do; '
                 'its summary.json is unchanged. Raise num_epochs or '
                 'num_train_steps to train on.', workdir, step,
                 num_train_steps)
  return summary


def finish(workdir: str, writer, state, progress: Progress, *,
           num_train_steps: int, steps_per_epoch: int, **results) -> dict:
  """The summary every mode writes (step, epochs, times) plus `results`.

  A run resumed after its last step (stopped during the final evaluation)
  logs no training window: its summary takes the last one logged.
  """
  step = parallel.step_of(state)
  if 'loss' not in results and jax.process_index() == 0:
    logged = [r for r in metrics_io.read_metrics(workdir) if 'loss' in r]
    if logged:
      results = {**{k: v for k, v in logged[-1].items()
                    if k not in ('step', 'epoch')}, **results}
  summary = {'step': step, 'num_train_steps': num_train_steps,
             'epochs': step / steps_per_epoch,
             'first_step_s': progress.first_step_s,
             'wall_time_s': time.perf_counter() - progress.t_start, **results}
  t = time.perf_counter()
  writer.flush()
  logging.info('Metric writers flushed in %.1f s.', time.perf_counter() - t)
  if jax.process_index() == 0:
    workdir_lib.write_summary(workdir, summary)
    _write_plots(workdir)
  return summary


def _write_plots(workdir: str):
  try:
    paths = plot.plot_run(workdir)
  except ImportError as e:  # matplotlib is optional for training
    logging.warning('No plots written (%s).', e)
    return
  logging.info('Plots: %s', ', '.join(paths))


_NOT_SHOWN = ('grad_norm', 'steps_per_sec', 'images_per_sec', 'eta_s')


def _log_window(writer, window, progress, step, steps_per_epoch,
                sampled_metrics=()) -> dict:
  """Averages the window's metrics, writes them and prints the progress line."""
  last = {}
  for k in window[0]:
    values = np.asarray(parallel.to_host([m[k] for m in window]))
    if k in sampled_metrics:
      values = values[~np.isnan(values)]
    if values.size:
      last[k] = float(np.mean(values))
  last.update(progress.rate(step))
  writer.write_scalars(step, {**last, 'epoch': step / steps_per_epoch})
  names = sorted((k for k in last if k not in _NOT_SHOWN),
                 key=lambda k: (k != 'loss', k))  # loss first
  shown = ' | '.join(f'{k} {last[k]:.4g}' for k in names)
  logging.info('step %d/%d (epoch %.2f) | %s | %.0f img/s | ETA %s', step,
               progress.num_train_steps, step / steps_per_epoch, shown,
               last['images_per_sec'], format_eta(last['eta_s']))
  return last


def _report_progress(num_train_steps: int, writer, every_secs: float):
  """clu's ReportProgress (steps/s and ETA to TensorBoard) when clu imports."""
  try:
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return periodic_actions.ReportProgress(num_train_steps=num_train_steps,
                                         writer=writer, every_secs=every_secs)
