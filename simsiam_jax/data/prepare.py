"""Preparing a TFDS dataset safely: its files first, one process, its splits.

- Manual files are checked before TFDS starts: ImageNet needs both tars in
  `data.manual_dir`, and TFDS given one of them prepares a dataset with one
  split and marks it complete.
- A prepared dataset is accepted only if it has the splits the config
  reads (`data.train_split`, `data.eval_split`); otherwise one line says
  to remove it and prepare again.
- With several processes, process 0 prepares while the others wait for the
  result (`data.prepare_wait_s` at most), polling the shared `data_dir`; a
  failure on process 0 is written beside the dataset, and every waiting
  process stops with its line.
- `config.mode='prepare'` (`sources.prepare_mode`) prepares and exits: the
  way to prepare once for a pod or a cluster, on one host, into the shared
  data_dir.
"""

import os
import re
import time

from absl import logging
import jax
import ml_collections

from simsiam_jax import parallel
from simsiam_jax.data import errors

# Files TFDS reads from manual_dir, by dataset: both must be there.
MANUAL_FILES = {
    'imagenet2012': ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'),
}
POLL_S = 5.0


def check_manual_files(name: str, manual_dir: str):
  """One line naming the missing manual file(s) of `name`, if any is missing."""
  wanted = MANUAL_FILES.get(name, ())
  missing = [f for f in wanted
             if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing:
    raise errors.DatasetNotReady(
        f'{name}: {" and ".join(missing)} not in {manual_dir}; TFDS needs '
        f'{" and ".join(wanted)} there (from image-net.org) before it '
        'prepares anything.')


def split_names(dc: ml_collections.ConfigDict) -> list[str]:
  """The base split names the config reads ('train[:10%]' -> 'train')."""
  return sorted({re.split(r'[\[+]', s)[0].strip()
                 for s in (dc.train_split, dc.eval_split)})


def check_splits(builder, dc: ml_collections.ConfigDict):
  """One line if the prepared `builder` lacks a split the config reads."""
  have = sorted(builder.info.splits.keys())
  missing = [s for s in split_names(dc) if s not in have]
  if missing:
    raise errors.DatasetNotReady(
        f'{builder.name} in {builder.data_dir} was prepared without split(s) '
        f'{missing} (it has {have}): remove that folder and prepare it again '
        'with every file in manual_dir.')


def failure_marker(builder) -> str:
  """The file process 0 writes in data_dir when preparing `builder` fails."""
  config = builder.builder_config
  name = '-'.join([builder.name] + ([config.name] if config else []) +
                  [str(builder.version)])
  return os.path.join(os.fspath(builder.data_dir_root), 'simsiam_jax_prepare',
                      f'{name}.failed')


def prepare_once(make_builder, prepare, dc: ml_collections.ConfigDict):
  """The prepared builder: prepared here on process 0, awaited elsewhere.

  Args:
    make_builder: () -> a fresh builder (it reads the data_dir as it is now).
    prepare: (builder) -> None, prepares it (raises DatasetNotReady and the
      like when it cannot).
    dc: config.data.
  """
  builder = make_builder()
  if builder.is_prepared():
    check_splits(builder, dc)
    return builder
  several = jax.process_count() > 1
  marker = failure_marker(builder)
  if several:
    # Every process is here before process 0 clears an old failure.
    if jax.process_index() == 0 and os.path.exists(marker):
      os.remove(marker)
    parallel.barrier('simsiam_jax prepare ' + builder.name)
  if jax.process_index() == 0:
    try:
      prepare(builder)
    except BaseException as e:
      if several:
        _write_failure(marker, e)
      raise
    builder = make_builder()
    check_splits(builder, dc)
  else:
    builder = _wait(make_builder, builder.name, marker, dc)
  if several:  # leave together (the wait may have been hours)
    parallel.barrier('simsiam_jax prepared ' + builder.name)
  return builder


def _write_failure(marker: str, e: BaseException):
  """The first line of `e` in `marker`, for the waiting processes."""
  try:
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker + '.tmp', 'w') as f:
      f.write((f'{type(e).__name__}: {e}'.splitlines() or [''])[0][:2000])
    os.replace(marker + '.tmp', marker)
  except OSError as write_error:
    logging.error('Could not tell the other processes (%s): %s', marker,
                  write_error)


def _wait(make_builder, name: str, marker: str,
          dc: ml_collections.ConfigDict):
  """Polls until process 0 has prepared `name`, failed, or time is up."""
  wait_s = dc.get('prepare_wait_s', 43200)
  logging.info('Process %d waits for process 0 to prepare %s (at most %d s).',
               jax.process_index(), name, wait_s)
  deadline = time.monotonic() + wait_s
  while True:
    builder = make_builder()
    if builder.is_prepared():
      check_splits(builder, dc)
      return builder
    if os.path.exists(marker):
      with open(marker) as f:
        raise errors.DatasetNotReady(
            f'process 0 could not prepare {name}: {f.read().strip()}')
    if time.monotonic() > deadline:
      raise errors.DatasetNotReady(
          f'{name} was not prepared in {builder.data_dir} within '
          f'data.prepare_wait_s={wait_s}: every process must see the same '
          'data_dir; prepare it first with --config.mode=prepare on one host.')
    time.sleep(POLL_S)
