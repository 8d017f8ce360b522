"""Picks the training source named by `config.data.dataset`.

'synthetic' is in memory and needs no TensorFlow; every other name goes
through TFDS and tf.data, imported only then.
"""

from typing import Iterator

import jax
import ml_collections

from simsiam_jax.data import synthetic


class DatasetNotReady(RuntimeError):
  """A dataset is neither prepared nor obtainable without a long download."""


def describe(config: ml_collections.ConfigDict) -> tuple[int, tuple[int, int, int]]:
  """(train examples, image shape HWC) of the configured source."""
  dc = config.data
  shape = (dc.image_size, dc.image_size, dc.channels)
  if dc.dataset == 'synthetic':
    return dc.synthetic_num_examples, shape
  from simsiam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = pipeline.get_builder(dc)
  return pipeline.num_examples(builder, dc.train_split), shape


def create_train_iterator(config: ml_collections.ConfigDict,
                          local_batch_size: int, start_step: int = 0
                          ) -> Iterator[dict]:
  """Per-process batch iterator, starting at batch `start_step`.

  Batches are {'view1', 'view2': [b, H, W, C] float32, 'label': [b]} with b
  the per-process batch; batch `start_step` comes first.
  """
  dc = config.data
  if dc.dataset == 'synthetic':
    return synthetic.two_view_batches(
        dc.synthetic_num_examples, dc.image_size, dc.channels,
        local_batch_size, seed=config.seed,
        process_index=jax.process_index(), start_step=start_step)
  from simsiam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = pipeline.get_builder(dc)
  ds = pipeline.train_dataset(dc, builder, config.seed, local_batch_size,
                              jax.process_index(), jax.process_count(),
                              start_step)
  return pipeline.as_numpy(ds)
