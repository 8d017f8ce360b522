"""Loading a pretraining run for evaluation, and the standalone kNN mode.

  python -m simsiam_jax.main --config=configs/fashion_mnist.py \
      --config.mode=knn_eval --config.pretrained.workdir=PRETRAIN_DIR \
      --workdir=EVAL_DIR

The network is rebuilt from the config saved in the checkpoint, so an eval
config never has to repeat the pretraining run's model settings.
"""

import os

from absl import logging
from etils import epath
import jax
import ml_collections

from simsiam_jax import checkpointing
from simsiam_jax import loop
from simsiam_jax.methods import registry
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import state as state_lib
from simsiam_jax import workdir as workdir_lib
from simsiam_jax.data import sources
from simsiam_jax.data import spec
from simsiam_jax.evaluation import knn
from simsiam_jax.evaluation import monitor
from simsiam_jax.models import simsiam

WHICH = ('latest', 'best')
# What opening another run's checkpoints read-only needs of a config.
_READER_CONFIG = ml_collections.ConfigDict(
    {'checkpoint': {'keep': None, 'async_save': False}})


class PretrainedNotFound(ValueError):
  """`config.pretrained` names no readable pretraining checkpoint."""


def _same(a: str, b: str) -> bool:
  if '://' in a or '://' in b:
    return a.rstrip('/') == b.rstrip('/')
  return os.path.abspath(a) == os.path.abspath(b)


def _check(config: ml_collections.ConfigDict, workdir: str) -> str:
  pc = config.pretrained
  if not pc.workdir:
    raise PretrainedNotFound(
        f'config.mode={config.mode!r} evaluates a pretraining run: pass '
        '--config.pretrained.workdir=DIR (the --workdir of the pretraining).')
  if pc.checkpoint not in WHICH:
    raise PretrainedNotFound(f'config.pretrained.checkpoint must be one of '
                             f'{WHICH}, got {pc.checkpoint!r}.')
  if _same(pc.workdir, workdir):
    raise PretrainedNotFound(
        f'--workdir is the pretraining workdir {pc.workdir!r}: give the '
        'evaluation its own --workdir so the pretraining run stays untouched.')
  return (checkpointing.BEST_DIR if pc.checkpoint == 'best'
          else checkpointing.CHECKPOINT_DIR)


# Tries at reading the latest checkpoint of a live run, which may rotate
# the one picked away before it is read.
_READ_TRIES = 5


def read_run(run_workdir: str, mesh, subdir: str = checkpointing.CHECKPOINT_DIR,
             step: int | None = None):
  """A pretraining run's checkpoint, opened read-only (local or gs://).

  Its own config first, from the checkpoint: it says which network (and
  optimiser state) to build. Without `step`, the latest: if a live run
  rotates it away while it is read, the then latest is read instead.

  Returns:
    (its config, its SimSiam model, its TrainState replicated on `mesh`).

  Raises:
    PretrainedNotFound: no readable checkpoint there.
  """
  for attempt in range(_READ_TRIES):
    before = _steps(run_workdir, subdir)
    try:
      return _read_once(run_workdir, mesh, subdir, step)
    except (ValueError, RuntimeError) as e:
      if (step is not None or isinstance(e, PretrainedNotFound) or
          attempt + 1 == _READ_TRIES or _steps(run_workdir, subdir) == before):
        raise
      logging.info('The checkpoints in %s changed while one was read (%s); '
                   'reading the latest again.', run_workdir, e)


def _steps(run_workdir: str, subdir: str):
  """The steps of the checkpoints there now (None: no such folder)."""
  if not (epath.Path(run_workdir) / subdir).is_dir():
    return None
  reader = checkpointing.Checkpointer(run_workdir, _READER_CONFIG,
                                      subdir=subdir, read_only=True)
  return tuple(sorted(reader.manager.all_steps()))


def _read_once(run_workdir: str, mesh, subdir: str, step: int | None):
  """read_run's one try."""
  if not (epath.Path(run_workdir) / subdir).is_dir():
    raise PretrainedNotFound(
        f'No {subdir}/ in {run_workdir!r}: not the workdir of a pretraining '
        'run' + (' with the kNN monitor on.'
                 if subdir == checkpointing.BEST_DIR else '.'))
  reader = checkpointing.Checkpointer(run_workdir, _READER_CONFIG,
                                      subdir=subdir, read_only=True)
  steps = sorted(reader.manager.all_steps())
  if step is not None and step not in steps:
    raise PretrainedNotFound(
        f'pretrained.step={step}: {reader.directory} has no checkpoint of that '
        f'step; it has steps {steps} (-1: the latest).')
  step, saved = reader.saved_config(step)
  if saved is None:
    raise PretrainedNotFound(f'No readable checkpoint in {reader.directory}.')
  saved = ml_collections.ConfigDict(saved)
  model = simsiam.create_model(saved.model)
  tx, _ = optim.create_optimizer(saved, 1, 1 << 30)  # shapes only
  init = state_lib.simsiam_initializer(model, tx,
                                       spec.image_shape(saved.data),
                                       registry.extra_init(saved))
  abstract = state_lib.abstract(init, mesh, jax.random.key(0))
  reader = checkpointing.Checkpointer(run_workdir, saved, subdir=subdir,
                                      read_only=True)
  state = reader.restore(abstract, step=step)
  logging.info('Loaded the pretrained checkpoint at step %d from %s.',
               parallel.step_of(state), reader.directory)
  return saved, model, state


def load(config: ml_collections.ConfigDict, workdir: str, mesh):
  """The pretraining run named by `config.pretrained`, for the run in `workdir`.

  Returns:
    (its config, its SimSiam model, its TrainState replicated on `mesh`).

  Raises:
    PretrainedNotFound: no such run or checkpoint.
  """
  pc = config.pretrained
  subdir = _check(config, workdir)
  return read_run(pc.workdir, mesh, subdir, pc.step if pc.step >= 0 else None)


def knn_eval(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """kNN top-1 of a saved checkpoint on `config.data` with `config.knn`.

  Writes `workdir/summary.json` ({'knn_top1', 'step', 'pretrained', ...}),
  with the baselines 'knn_raw_pixels' and 'knn_random_init' (the pretraining
  run's own initialisation, BN on batch statistics; see
  `KnnMonitor.baselines`) unless `config.knn.baselines` is False, and with
  knn.rank_images > 0 the features' spread ('feature_rank', ..., see
  `KnnMonitor.spread`) beside the same baselines' spread; with
  knn.per_class, the top-1 of each class ('knn_per_class', and
  'knn_per_class_raw_pixels': lists in class order, None for a class
  without test images).
  """
  mesh = parallel.create_mesh()
  saved, model, state = load(config, workdir, mesh)  # checked before writing
  loop.take_workdir(workdir, config)
  knn_monitor = monitor.KnnMonitor(config, model, mesh)
  baselines = {**knn_monitor.baselines(seed=saved.seed),  # shown in the log
               **knn_monitor.spread_baselines(seed=saved.seed)}
  summary = {**knn_monitor.evaluate(state), **baselines,
             'step': parallel.step_of(state),
             'pretrained': str(config.pretrained.workdir),
             'checkpoint': config.pretrained.checkpoint}
  if config.knn.per_class:
    summary.update(_per_class(config, knn_monitor))
  if jax.process_index() == 0:
    workdir_lib.write_summary(workdir, summary)
  return summary


def _per_class(config, knn_monitor) -> dict:
  """kNN top-1 of each class, the checkpoint's (the kNN just scored) and the
  raw pixels', logged side by side: where the features gain over the pixels
  and where not."""
  out = {'knn_per_class': knn.per_class(knn_monitor.last_confusion)}
  pixels = [None] * len(out['knn_per_class'])
  if knn_monitor.pixel_dim <= config.knn.max_pixel_dim:
    pixels = knn.per_class(knn_monitor.confusion(None, 'pixels'))
    out['knn_per_class_raw_pixels'] = pixels
  percent = lambda v: '-' if v is None else f'{100 * v:.1f}'
  logging.info('kNN top-1 per class on %s (raw pixels): %s',
               config.data.eval_split, ' | '.join(
                   f'{name} {percent(a)} ({percent(b)})' for name, a, b in
                   zip(sources.class_names(config), out['knn_per_class'],
                       pixels)))
  return out
