"""The data sources named by `config.data`: what a mode reads, without TensorFlow.

`make_train_source(config, mesh)` is the one entry for training data: it
checks `config.data` once, then returns the size, shape, step counts, the
per-process batch iterator and the in-step augmentation (or None). Where
the data come from:

  synthetic                 in memory (synthetic.py), no TensorFlow
  data.resident=True        uint8 images on the devices (resident.py)
  any other dataset         TFDS + tf.data (tfds_pipeline.py, imported only then)

`eval_batches`, `num_classes`, `train_labels` and the label subsets serve the
evaluations the same way.
"""

import dataclasses
import functools
import math
import os
from typing import Callable, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np

from simsiam_jax.data import device_augment
from simsiam_jax.data import errors
from simsiam_jax.data import idx_files
from simsiam_jax.data import resident
from simsiam_jax.data import spec
from simsiam_jax.data import synthetic


def _pipeline():
  from simsiam_jax.data import tfds_pipeline  # pylint: disable=g-import-not-at-top
  return tfds_pipeline


@dataclasses.dataclass
class TrainSource:
  """What the train step needs from the data."""
  num_examples: int
  image_shape: tuple[int, int, int]  # the network's input, HWC
  steps_per_epoch: int
  num_train_steps: int
  # start_step -> endless per-process batches, batch `start_step` first.
  batches: Callable[[int], Iterator[dict]]
  # None (host-augmented batches), or (batch, step) -> views, in the step.
  augmentation: Callable | None


def num_steps(config: ml_collections.ConfigDict, num_train_examples: int):
  """(steps_per_epoch, num_train_steps) from the config and the data size."""
  steps_per_epoch = num_train_examples // config.batch_size
  if steps_per_epoch < 1:
    raise errors.DataConfigError(
        f'batch_size={config.batch_size} is larger than the training split '
        f'({num_train_examples} examples): lower --config.batch_size.')
  if config.num_train_steps > 0:
    return steps_per_epoch, config.num_train_steps
  return steps_per_epoch, int(config.num_epochs * steps_per_epoch)


def make_train_source(config: ml_collections.ConfigDict, mesh,
                      local_batch_size: int) -> TrainSource:
  """The pretraining data as `config.data` says, checked before anything is read.

  Raises:
    errors.DataConfigError: settings no source can run.
  """
  dc = config.data
  spec.check(dc)
  if dc.resident:
    resident_set = resident.ResidentTrainSet(config, mesh)
    n, shape = resident_set.num_examples, resident_set.image_shape
    batches = lambda start_step: resident_set.batches()  # read by step
  else:
    n, shape = describe(config)
    batches = functools.partial(create_train_iterator, config,
                                local_batch_size)
  steps_per_epoch, num_train_steps = num_steps(config, n)
  if dc.resident:
    augmentation = functools.partial(
        resident.two_views, config=config, mesh=mesh,
        steps_per_epoch=steps_per_epoch)
  elif dc.augment_on == 'device':
    augmentation = functools.partial(device_augment.host_crop_views,
                                     config=config)
  else:
    augmentation = None
  return TrainSource(n, shape, steps_per_epoch, num_train_steps, batches,
                     augmentation)


def describe(config: ml_collections.ConfigDict) -> tuple[int, tuple[int, int, int]]:
  """(train examples, image shape HWC) of the configured source."""
  dc = config.data
  shape = spec.image_shape(dc)
  if dc.dataset == 'synthetic':
    return dc.synthetic_num_examples, shape
  pipeline = _pipeline()
  builder = pipeline.get_builder(dc)
  return pipeline.num_examples(builder, dc.train_split), shape


def prepare_mode(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`config.mode='prepare'`: prepares the config's TFDS dataset, then exits."""
  del workdir
  builder = _pipeline().get_builder(config.data)
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  logging.info('%s is prepared in %s: %s.', builder.name, builder.data_dir,
               splits)
  return {'dataset': builder.name, 'data_dir': os.fspath(builder.data_dir),
          'splits': splits}


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The label of each class index (their count is `num_classes`)."""
  dc = config.data
  if dc.dataset == 'synthetic':
    return tuple(str(c) for c in range(synthetic.NUM_CLASSES))
  if dc.dataset == 'fashion_mnist_debian':
    return idx_files.CLASSES
  return tuple(_pipeline().get_builder(dc).info.features['label'].names)


def num_classes(config: ml_collections.ConfigDict) -> int:
  return len(class_names(config))


def train_labels(config: ml_collections.ConfigDict) -> np.ndarray:
  """Labels [N] of the train split by example index: what a subset indexes."""
  dc = config.data
  if dc.dataset == 'synthetic':
    return synthetic.labelled_images(dc.synthetic_num_examples, dc.image_size,
                                     dc.channels, config.seed)[1]
  pipeline = _pipeline()
  return pipeline.split_labels(pipeline.get_builder(dc), dc.train_split)


def select_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """Sorted example indices of a class-balanced subset of `labels` [N].

  Each class keeps round(fraction * its size) examples (halves round up), at
  least one, drawn without replacement by NumPy from `seed` alone: the same
  labels, fraction and seed give the same subset on any topology.
  """
  if not 0.0 < fraction <= 1.0:
    raise errors.DataConfigError(f'classifier.label_fraction must be in (0, 1], got '
                     f'{fraction}.')
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  picked = []
  for c in np.unique(labels):  # sorted, so the draws do not depend on order
    members = np.flatnonzero(labels == c)
    k = max(1, int(np.floor(fraction * len(members) + 0.5)))
    picked.append(rng.choice(members, size=min(k, len(members)),
                             replace=False))
  return np.sort(np.concatenate(picked))


def label_subset(config: ml_collections.ConfigDict):
  """The labelled subset the classifier trains on, or None for the whole split.

  Returns:
    None when `config.classifier.label_fraction` is 1; else (indices [n] into
    the train split, sorted; their labels [n]).
  """
  cc = config.classifier
  if cc.label_fraction == 1.0:
    return None
  labels = train_labels(config)
  indices = select_subset(labels, cc.label_fraction, cc.label_seed)
  return indices, labels[indices]


def process_share(indices: np.ndarray, process_index: int,
                  process_count: int) -> np.ndarray:
  """This process's part of a subset's indices: near-equal, disjoint, covering."""
  return np.array_split(np.asarray(indices), process_count)[process_index]


def create_train_iterator(config: ml_collections.ConfigDict,
                          local_batch_size: int, start_step: int = 0,
                          views: int = 2,
                          subset: np.ndarray | None = None) -> Iterator[dict]:
  """Per-process batch iterator, starting at batch `start_step`.

  Batches are {'view1', 'view2': [b, H, W, C] float32, 'label': [b]} (or
  {'image', 'label'} with `views=1`) with b the per-process batch; batch
  `start_step` comes first.

  Args:
    subset: None, or indices into the train split (`label_subset`), the same
      on every process: only those examples are drawn, each process from its
      `process_share`.
  """
  dc = config.data
  pi, pc = jax.process_index(), jax.process_count()
  share = None if subset is None else process_share(subset, pi, pc)
  if dc.dataset == 'synthetic':
    if share is None:
      return synthetic.train_batches(
          dc.synthetic_num_examples, dc.image_size, dc.channels,
          local_batch_size, seed=config.seed, process_index=pi,
          start_step=start_step, views=views)
    images, labels = synthetic.labelled_images(
        dc.synthetic_num_examples, dc.image_size, dc.channels, config.seed)
    return subset_batches(images, labels, share, local_batch_size,
                          config.seed, pi, start_step, views)
  pipeline = _pipeline()
  builder = pipeline.get_builder(dc)
  ds = pipeline.train_dataset(dc, builder, config.seed, local_batch_size,
                              pi, pc, start_step, views=views, indices=share)
  return pipeline.as_numpy(ds)


def subset_batches(images: np.ndarray, labels: np.ndarray, share: np.ndarray,
                   local_batch_size: int, seed: int, process_index: int,
                   start_step: int = 0, views: int = 2) -> Iterator[dict]:
  """Endless batches of in-memory examples `share`, each pass in a new order.

  The examples are a stream of permutations of `share`, one per pass, drawn
  from (seed, process, pass); batch `step` is its slice [step * b, (step +
  1) * b) with the views of the synthetic source, drawn from (seed, process,
  step). So a run restarts at any step.
  """
  n = len(share)
  step = start_step
  while True:
    position = step * local_batch_size + np.arange(local_batch_size)
    passes, offsets = np.divmod(position, n)
    idx = np.empty(local_batch_size, np.int64)
    for p in np.unique(passes):
      order = np.random.default_rng((seed, process_index, int(p), 1))
      idx[passes == p] = order.permutation(share)[offsets[passes == p]]
    rng = np.random.default_rng((seed, process_index, step))
    batch = images[idx]
    # pylint: disable-next=protected-access
    out = {name: synthetic._view(batch, rng)
           for name in (('view1', 'view2') if views == 2 else ('image',))}
    out['label'] = labels[idx]
    yield out
    step += 1


def eval_batches(config: ml_collections.ConfigDict, split: str,
                 local_batch_size: int) -> Iterator[dict]:
  """One pass over this process's share of `split`: {'image', 'label', 'mask'}.

  Padded (mask False) so that every process yields as many batches.
  """
  dc = config.data
  pi, pc = jax.process_index(), jax.process_count()
  if dc.dataset == 'synthetic':
    images, labels = synthetic.labelled_images(
        dc.synthetic_num_examples, dc.image_size, dc.channels, config.seed,
        split)
    yield from padded_batches(images, labels, local_batch_size, pi, pc)
    return
  if dc.resident:  # from the same files as the train split, no TensorFlow
    images, labels = resident.load_uint8(config, split)
    if images.shape[1] != dc.image_size:
      raise errors.DataConfigError(f'data.resident evaluates {images.shape[1]} px images '
                       f'as they are; set data.image_size={images.shape[1]}.')
    # uint8 as stored (a quarter of float32's bytes, one channel for grey):
    # the evaluation's jitted function normalises them on the device
    # (device_augment.network_input).
    yield from padded_batches(images, labels, local_batch_size, pi, pc)
    return
  pipeline = _pipeline()
  builder = pipeline.get_builder(dc)
  n = pipeline.num_examples(builder, split)
  num_batches = math.ceil(math.ceil(n / pc) / local_batch_size)
  it = pipeline.as_numpy(pipeline.eval_dataset(dc, builder, split,
                                               local_batch_size, pi, pc))
  last = empty = None
  for _ in range(num_batches):
    batch = next(it, None)
    if batch is None:
      if empty is None:
        empty = {k: np.zeros_like(v) for k, v in last.items()}
      batch = empty
    last = batch
    yield batch


def padded_batches(images: np.ndarray, labels: np.ndarray,
                   local_batch_size: int, process_index: int,
                   process_count: int) -> Iterator[dict]:
  """This process's share of in-memory examples, in batches padded with mask False.

  {'image', 'label', 'mask'}; every process yields as many batches.
  """
  shares = np.array_split(np.arange(len(images)), process_count)
  idx = shares[process_index]
  num_batches = -(-len(shares[0]) // local_batch_size)
  for b in range(num_batches):
    part = idx[b * local_batch_size:(b + 1) * local_batch_size]
    pad = local_batch_size - len(part)
    yield {'image': np.concatenate([images[part], np.zeros(
               (pad, *images.shape[1:]), images.dtype)]),
           'label': np.concatenate([labels[part], np.zeros(pad, np.int32)]),
           'mask': np.arange(local_batch_size) < len(part)}
