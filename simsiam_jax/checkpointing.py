"""Orbax checkpoints: periodic async saves, auto-resume (preemption: preemption.py).

A checkpoint holds the train state (step, params, BN statistics, optimiser
state) and the run's config as JSON. The PRNG and data position need no
extra state: the data views are a function of (seed, process, example index)
and the train step draws no random numbers, so (config.seed, step) restores
both exactly; the input pipeline skips to the step's first example.

Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a kill during a save leaves the previous checkpoint as the
latest. Each save also writes STEP.digests.json (a SHA-256 per array);
restore checks it, so flipped bits count as corruption. A checkpoint that
cannot be read, or fails its digests, is skipped with a warning and, once an
older one restores, moved aside to STEP.corrupt-TIME, so that step is saved
again; if none can be read the run stops rather than starting afresh.
"""

import contextlib
import functools
import hashlib
import json
import os

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from simsiam_jax import parallel
from simsiam_jax import workdir as workdir_lib

CHECKPOINT_DIR = workdir_lib.CHECKPOINT_DIR
BEST_DIR = 'checkpoint_best'  # the best by kNN top-1, kept apart from the latest


class ConfigMismatch(ValueError):
  """The run's model does not fit the checkpoint in its workdir."""


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (disk full, lost permissions...)."""


class CorruptCheckpoint(RuntimeError):
  """A checkpoint's arrays differ from the digests written when it was saved."""


def _state_items(state) -> dict:
  items = {'step': state.step, 'params': state.params,
           'batch_stats': state.batch_stats, 'opt_state': state.opt_state}
  if jax.tree.leaves(getattr(state, 'extra', None)):
    items['extra'] = state.extra  # a method's target network or queue
  return items


DIGESTS_SUFFIX = '.digests.json'
WINDOW_SUFFIX = '.window.json'


def array_digests(state) -> dict:
  """{path: SHA-256 of the array's bytes} for every array a checkpoint holds."""
  leaves = jax.tree_util.tree_leaves_with_path(
      parallel.to_host(_state_items(state)))
  return {jax.tree_util.keystr(path): hashlib.sha256(
      np.ascontiguousarray(x).tobytes()).hexdigest() for path, x in leaves}


def config_mismatches(saved: dict, config: ml_collections.ConfigDict) -> list:
  """'model.FIELD: checkpoint X, this run Y' for every model field that
  differs (`workdir.model_changes`)."""
  return [f'{k}: checkpoint {a!r}, this run {b!r}' for k, a, b in
          workdir_lib.model_changes(saved, config.to_dict())]


@functools.cache  # Orbax's registry is global: once per process
def _write_replicated_arrays_whole_on_cpu():
  """On the CPU, each replicated array is written whole by one device.

  Orbax's default there (replica-parallel writing) cuts every replicated
  array into one slice per device and compiles a slicing program for
  each (array, device): about 150 compilations, 10 s of the tiny run's
  first save on 8 simulated devices, for no gain (they share one memory).
  Accelerators keep Orbax's default.
  """
  if jax.default_backend() == 'cpu':
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
        override=True)


def _directory(workdir: str, subdir: str) -> str:
  """workdir/subdir, absolute for local paths; gs://... as it is."""
  if '://' in str(workdir):
    return f'{str(workdir).rstrip("/")}/{subdir}'
  return os.path.abspath(os.path.join(workdir, subdir))


class Checkpointer:
  """The run's CheckpointManager: saves, and restores with validation.

  `state.restore_or_create` restores through it or creates a new state.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               subdir: str = CHECKPOINT_DIR, read_only: bool = False):
    """The manager of `workdir/subdir`; `read_only` for another run's checkpoints."""
    self.directory = _directory(workdir, subdir)
    _write_replicated_arrays_whole_on_cpu()
    cc = config.checkpoint
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cc.keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=cc.async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'config'))
    self.best = None  # made at the first kNN score
    self.read_only = read_only
    self._workdir = workdir
    self.config = config

  def latest_step(self):
    return self.manager.latest_step()

  def _args(self, state):
    return ocp.args.Composite(
        state=ocp.args.StandardSave(_state_items(state)),
        config=ocp.args.JsonSave(self.config.to_dict()))

  def save(self, step: int, state, force: bool = False) -> bool:
    """Starts an (async) save of `state` at `step`; returns whether it did.

    Beside it, process 0 writes `STEP.digests.json`: a SHA-256 of every
    array, taken now from the state being saved, that `restore` checks.

    Raises:
      CheckpointWriteError: this or the previous (async) save failed.
    """
    digests = array_digests(state) if jax.process_index() == 0 else None
    with self._write_errors():
      saved = self.manager.save(step, args=self._args(state), force=force)
      if saved and digests is not None:
        self._write_digests(step, digests)
      return saved

  def _digests_path(self, step: int) -> epath.Path:
    return epath.Path(self.directory) / f'{step}{DIGESTS_SUFFIX}'

  def _write_digests(self, step: int, digests: dict):
    workdir_lib.write_atomic(self._digests_path(step), json.dumps(digests))
    self._drop_rotated(step, DIGESTS_SUFFIX)

  def _drop_rotated(self, step: int, suffix: str):
    """Removes the STEP`suffix` files of checkpoints rotated away."""
    keep = set(self.manager.all_steps()) | {step}
    for p in epath.Path(self.directory).glob(f'*{suffix}'):
      name = p.name[:-len(suffix)]
      if name.isdigit() and int(name) not in keep:
        p.unlink()

  def save_window(self, step: int, window: list):
    """The metrics of the log window open at `step`, beside its checkpoint.

    A run resumed from `step` finishes that window with them, so its
    metrics.jsonl and summary.json equal an uninterrupted run's (process 0's
    job; a no-op for an empty window).
    """
    if jax.process_index() != 0 or self.read_only or not window:
      return
    rows = [{k: float(v) for k, v in m.items()}
            for m in parallel.to_host(window)]
    workdir_lib.write_atomic(epath.Path(self.directory) /
                             f'{step}{WINDOW_SUFFIX}', json.dumps(rows))
    self._drop_rotated(step, WINDOW_SUFFIX)

  def read_window(self, step: int) -> list:
    """`save_window`'s metrics of `step` as float32 scalars; [] if none."""
    path = epath.Path(self.directory) / f'{step}{WINDOW_SUFFIX}'
    if not path.exists():
      return []
    try:
      rows = json.loads(path.read_text())
      window = [{k: np.float32(v) for k, v in r.items()} for r in rows]
    except (OSError, ValueError, TypeError, AttributeError) as e:
      logging.warning('%s is unreadable (%s): the first log window after '
                      'this resume averages fewer steps.', path, e)
      return []
    return window

  def _check_digests(self, step: int, state):
    """Raises CorruptCheckpoint if `state` differs from what was saved at `step`."""
    path = self._digests_path(step)
    if not path.exists():  # saved before digests were written
      return
    got = array_digests(state)
    try:
      want = json.loads(path.read_text())
      if not isinstance(want, dict) or not all(
          isinstance(v, str) for v in want.values()):
        raise ValueError('not a JSON object of SHA-256 strings')
    except (OSError, ValueError) as e:
      self._replace_digests(step, path, got, e)
      return
    bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    if bad:
      raise CorruptCheckpoint(
          f'{len(bad)} arrays differ from their saved SHA-256, e.g. '
          f'{", ".join(bad[:3])}')

  def _replace_digests(self, step: int, path, digests: dict, error):
    """An unreadable digest file: moved aside, written again from `digests`.

    The checkpoint itself restored; without its saved digests it cannot be
    verified, so it is taken as it is (Orbax's own checks passed).
    """
    first = str(error).splitlines()[0][:200] if str(error) else ''
    logging.warning('The digests of the checkpoint of step %d are unreadable '
                    '(%s: %s): the checkpoint is used unverified and its '
                    'digests are written again.', step,
                    type(error).__name__, first)
    if self.read_only or jax.process_index() != 0:
      return
    stamp = workdir_lib.stamp()
    path.rename(path.parent / f'{path.name}.corrupt-{stamp}')
    self._write_digests(step, digests)

  def _quarantine(self, steps: list):
    """Moves unreadable checkpoints aside, so their steps can be saved again."""
    if self.read_only or not steps:
      return
    stamp = workdir_lib.stamp()
    for step in steps:
      src = epath.Path(self.directory) / str(step)
      dst = epath.Path(self.directory) / f'{step}.corrupt-{stamp}'
      if jax.process_index() == 0 and src.exists():
        src.rename(dst)
        logging.warning('Moved the unreadable checkpoint of step %d aside to '
                        '%s; training redoes that step.', step, dst)
    self.manager.reload()

  @contextlib.contextmanager
  def _write_errors(self):
    # Orbax reports a failed async write on the next save or wait, as a
    # ValueError holding the OS error; say what happened and what is safe.
    try:
      yield
    except (ValueError, OSError) as e:
      if isinstance(e, CheckpointWriteError):
        raise
      first = str(e).strip().splitlines()[0][:500]
      latest = self.manager.latest_step()
      intact = ('no checkpoint was complete yet, so a rerun starts afresh'
                if latest is None else f'the latest complete checkpoint (step '
                f'{latest}) is intact and a rerun resumes from it')
      raise CheckpointWriteError(
          f'Writing a checkpoint to {self.directory} failed: {first}. Free '
          f'space there, make it writable, or pass another --workdir; '
          f'{intact}.') from e

  def save_if_best(self, step: int, state, knn_top1: float):
    """Keeps `state` in checkpoint_best/ if its kNN top-1 is the best so far."""
    if self.best is None:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=1, create=True, best_fn=lambda m: m['knn_top1'],
          best_mode='max',
          enable_async_checkpointing=self.config.checkpoint.async_save)
      self.best = ocp.CheckpointManager(
          _directory(self._workdir, BEST_DIR),
          options=options, item_names=('state', 'config'))
    with self._write_errors():
      self.best.save(step, args=self._args(state),
                     metrics={'knn_top1': knn_top1}, force=True)

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self):
    with self._write_errors():
      self.manager.wait_until_finished()
      if self.best is not None:
        self.best.wait_until_finished()

  def saved_config(self, step=None):
    """(step, config dict) of `step` or of the latest readable checkpoint.

    Returns:
      (None, None) when there is no checkpoint.
    """
    steps = [step] if step is not None else sorted(self.manager.all_steps(),
                                                   reverse=True)
    for s in steps:
      try:
        return s, self._read_config(s)
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise
        logging.warning('Checkpoint at step %d is unreadable (%s: %s); '
                        'trying the previous one.', s, type(e).__name__, e)
    return None, None

  def _read_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))['config']

  def restore(self, abstract_state, step=None):
    """The latest readable checkpoint (or `step`) restored into `abstract_state`'s layout.

    Args:
      abstract_state: a TrainState of jax.ShapeDtypeStruct leaves with
        shardings (from jax.eval_shape); its static fields are kept.
      step: restore this step (an error if it cannot be read); None: the
        latest readable one.

    Returns:
      The restored TrainState, or None when there is no checkpoint.

    Raises:
      ConfigMismatch: the checkpoint's model differs from the config's.
      RuntimeError: checkpoints exist but none can be read (never a silent
        fresh start).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if step is not None:
      if step not in steps:
        raise ValueError(f'No checkpoint of step {step} in {self.directory}; '
                         f'it has steps {sorted(steps)}.')
      steps = [step]
    if not steps:
      return None
    target = _state_items(abstract_state)
    unreadable = []  # moved aside once an older one restores
    for step in steps:  # pylint: disable=redefined-argument-from-local
      try:
        saved = self._read_config(step)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Checkpoint at step %d is unreadable (%s: %s); '
                        'trying the previous one.', step, type(e).__name__, e)
        unreadable.append(step)
        continue
      mismatches = config_mismatches(saved, self.config)
      if mismatches:
        raise ConfigMismatch(
            f'The checkpoint in {self.directory} (step {step}) was written by '
            'another model: ' + '; '.join(mismatches) + '. Use a new --workdir '
            'for this config, or the checkpoint\'s model settings to resume. '
            'Nothing was overwritten.')
      try:
        items = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))['state']
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Checkpoint at step %d is unreadable (%s: %s); '
                        'trying the previous one.', step, type(e).__name__, e)
        unreadable.append(step)
        continue
      state = abstract_state.replace(**items)
      try:
        self._check_digests(step, state)
      except CorruptCheckpoint as e:
        logging.warning('Checkpoint at step %d is corrupt (%s); trying the '
                        'previous one.', step, e)
        unreadable.append(step)
        continue
      self._quarantine(unreadable)
      return state
    raise RuntimeError(
        f'Checkpoints {steps} in {self.directory} exist but none can be read. '
        'Move them away to start afresh; this run will not overwrite them.')
