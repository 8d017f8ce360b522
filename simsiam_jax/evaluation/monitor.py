"""The kNN monitor of a pretraining run: features of the train and test splits.

Features are the pooled backbone output with BatchNorm in inference mode,
computed on the mesh; the bank (train split) stays sharded across devices.
"""

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections

from simsiam_jax import parallel
from simsiam_jax.data import input_pipeline
from simsiam_jax.evaluation import knn


class KnnMonitor:
  """Weighted kNN top-1 of the current backbone on `config.data.eval_split`."""

  def __init__(self, config: ml_collections.ConfigDict, model, mesh):
    self.config = config
    self.mesh = mesh
    self.num_classes = input_pipeline.num_classes(config)
    parallel.check_batch_size(config.knn.batch_size, mesh)
    self.local_batch = config.knn.batch_size // jax.process_count()
    self._features = jax.jit(
        lambda variables, x: model.apply(variables, x, train=False,
                                         method='features'),
        in_shardings=(parallel.replicated(mesh), parallel.data_sharded(mesh)),
        out_shardings=parallel.data_sharded(mesh))
    self._concat = jax.jit(lambda xs: jax.numpy.concatenate(xs),
                           out_shardings=parallel.data_sharded(mesh))

  def features(self, variables, split: str):
    """(features [N, D], labels [N], mask [N]) sharded along N on the mesh."""
    feats, labels, masks = [], [], []
    for batch in input_pipeline.eval_batches(self.config, split,
                                              self.local_batch):
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
