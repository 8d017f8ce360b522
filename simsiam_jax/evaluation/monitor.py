"""The kNN monitor of a pretraining run: features of the train and test splits.

Features are the pooled backbone output with BatchNorm in inference mode,
computed on the mesh; the bank (train split) stays sharded across devices.
"""

import math

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from simsiam_jax import parallel
from simsiam_jax.evaluation import knn


class KnnMonitor:
  """Weighted kNN top-1 of the current backbone on `config.data.eval_split`."""

  def __init__(self, config: ml_collections.ConfigDict, model, mesh):
    from simsiam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    self._pipeline = pipeline
    self.config = config
    self.mesh = mesh
    self.builder = pipeline.get_builder(config.data)
    self.num_classes = self.builder.info.features['label'].num_classes
    parallel.check_batch_size(config.knn.batch_size, mesh)
    self.local_batch = config.knn.batch_size // jax.process_count()
    self._features = jax.jit(
        lambda variables, x: model.apply(variables, x, train=False,
                                         method='features'),
        in_shardings=(parallel.replicated(mesh), parallel.data_sharded(mesh)),
        out_shardings=parallel.data_sharded(mesh))
    self._concat = jax.jit(lambda xs: jax.numpy.concatenate(xs),
                           out_shardings=parallel.data_sharded(mesh))

  def _batches(self, split: str):
    """Eval batches of this process, padded so every process yields as many."""
    n = self._pipeline.num_examples(self.builder, split)
    per_process = math.ceil(n / jax.process_count())
    num_batches = math.ceil(per_process / self.local_batch)
    ds = self._pipeline.eval_dataset(
        self.config.data, self.builder, split, self.local_batch,
        jax.process_index(), jax.process_count())
    empty = None
    it = self._pipeline.as_numpy(ds)
    for _ in range(num_batches):
      batch = next(it, None)
      if batch is None:
        empty = empty or {k: np.zeros_like(v) for k, v in last.items()}
        batch = empty
      last = batch
      yield batch

  def features(self, variables, split: str):
    """(features [N, D], labels [N], mask [N]) sharded along N on the mesh."""
    feats, labels, masks = [], [], []
    for batch in self._batches(split):
      g = parallel.host_to_global(batch, self.mesh)
      feats.append(self._features(variables, g['image']))
      labels.append(g['label'])
      masks.append(g['mask'])
    return self._concat(feats), self._concat(labels), self._concat(masks)

  def __call__(self, state) -> float:
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    kc = self.config.knn
    bank = self.features(variables, self.config.data.train_split)
    test = self.features(variables, self.config.data.eval_split)
    # Queries are small next to the bank: every process takes all of them.
    test = [multihost_utils.process_allgather(x, tiled=True) for x in test]
    top1 = knn.knn_accuracy(*bank, *test, self.mesh, k=kc.k,
                            temperature=kc.temperature,
                            num_classes=self.num_classes)
    logging.info('kNN (k=%d, T=%g) top-1 on %s: %.2f%%', kc.k, kc.temperature,
                 self.config.data.eval_split, 100 * top1)
    return top1
