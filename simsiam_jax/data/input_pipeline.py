"""Picks the source named by `config.data.dataset`.

'synthetic' is in memory and needs no TensorFlow; every other name goes
through TFDS and tf.data, imported only then.
"""

import math
from typing import Iterator

import jax
import ml_collections
import numpy as np

from simsiam_jax.data import idx_files
from simsiam_jax.data import synthetic


class DatasetNotReady(RuntimeError):
  """A dataset is neither prepared nor obtainable without a long download."""


def _pipeline():
  from simsiam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline


def describe(config: ml_collections.ConfigDict) -> tuple[int, tuple[int, int, int]]:
  """(train examples, image shape HWC) of the configured source."""
  dc = config.data
  shape = (dc.image_size, dc.image_size, dc.channels)
  if dc.dataset == 'synthetic':
    return dc.synthetic_num_examples, shape
  pipeline = _pipeline()
  builder = pipeline.get_builder(dc)
  return pipeline.num_examples(builder, dc.train_split), shape


def num_classes(config: ml_collections.ConfigDict) -> int:
  dc = config.data
  if dc.dataset == 'synthetic':
    return synthetic.NUM_CLASSES
  if dc.dataset == 'fashion_mnist_debian':
    return len(idx_files.CLASSES)
  return _pipeline().get_builder(dc).info.features['label'].num_classes


def create_train_iterator(config: ml_collections.ConfigDict,
                          local_batch_size: int, start_step: int = 0,
                          views: int = 2) -> Iterator[dict]:
  """Per-process batch iterator, starting at batch `start_step`.

  Batches are {'view1', 'view2': [b, H, W, C] float32, 'label': [b]} (or
  {'image', 'label'} with `views=1`) with b the per-process batch; batch
  `start_step` comes first.
  """
  dc = config.data
  if dc.dataset == 'synthetic':
    return synthetic.train_batches(
        dc.synthetic_num_examples, dc.image_size, dc.channels,
        local_batch_size, seed=config.seed,
        process_index=jax.process_index(), start_step=start_step, views=views)
  pipeline = _pipeline()
  builder = pipeline.get_builder(dc)
  ds = pipeline.train_dataset(dc, builder, config.seed, local_batch_size,
                              jax.process_index(), jax.process_count(),
                              start_step, views=views)
  return pipeline.as_numpy(ds)


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
    from simsiam_jax.data import resident  # pylint: disable=g-import-not-at-top
    images, labels = resident.load_uint8(config, split)
    if images.shape[1] != dc.image_size:
      raise ValueError(f'data.resident evaluates {images.shape[1]} px images '
                       f'as they are; set data.image_size={images.shape[1]}.')
    images = images.astype(np.float32) / 255.0
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    images = (images - np.float32(dc.aug.mean)) / np.float32(dc.aug.std)
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
