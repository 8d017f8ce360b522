"""Picks the training source named by `config.data.dataset`.

'synthetic' is in memory and needs no TensorFlow; every other name goes
through TFDS and tf.data (imported only then).
"""

from typing import Iterator

import jax
import ml_collections

from simsiam_jax.data import synthetic


def create_train_iterator(config: ml_collections.ConfigDict,
                          local_batch_size: int, start_step: int = 0
                          ) -> tuple[Iterator[dict], int, tuple[int, int, int]]:
  """Returns (per-process batch iterator, train examples, image shape HWC)."""
  dc = config.data
  if dc.dataset == 'synthetic':
    shape = (dc.image_size, dc.image_size, dc.channels)
    it = synthetic.two_view_batches(
        dc.synthetic_num_examples, dc.image_size, dc.channels,
        local_batch_size, seed=config.seed,
        process_index=jax.process_index(), start_step=start_step)
    return it, dc.synthetic_num_examples, shape
  raise ValueError(
      f"Unknown dataset {dc.dataset!r}. Use data.dataset='synthetic'.")
