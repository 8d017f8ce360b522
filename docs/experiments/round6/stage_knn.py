"""kNN (k=200, T=0.1, the monitor's) on every stage of a checkpoint's backbone.

Each stage's output averaged over its map (the last stage's is the backbone's
feature), and the last two stages' maps flattened unpooled; beside them the
raw pixels as the monitor feeds them. Clean Fashion-MNIST images, BN running
averages; the project's kNN (`evaluation/knn.py`).

  PYTHONPATH=. python docs/experiments/round6/stage_knn.py WORKDIR [STEP]
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import simsiam_jax
from simsiam_jax import parallel
from simsiam_jax.data import device_augment
from simsiam_jax.data import idx_files
from simsiam_jax.evaluation import knn


def stage_features(backbone, images, batch_size=1000):
  """{name: [N, D]}: every stage pooled, the last two also flattened, and
  the network's input flattened ('raw pixels')."""
  aug = backbone.config.data.aug

  @jax.jit
  def apply(variables, x):
    x = device_augment.network_input(x, aug)
    _, state = backbone.module.apply(variables, x, train=False,
                                     capture_intermediates=True)
    out = {'raw pixels': x.reshape(x.shape[0], -1)}
    stages = sorted(k for k in state['intermediates'] if k.startswith('layer'))
    for name in stages:
      a = state['intermediates'][name]['__call__'][0]
      out[f'{name} pooled'] = a.mean((1, 2))
      if name in stages[-2:]:
        out[f'{name} unpooled'] = a.reshape(a.shape[0], -1)
    return out

  parts = [jax.device_get(apply(backbone.variables,
                                jnp.asarray(images[i:i + batch_size])))
           for i in range(0, len(images), batch_size)]
  return {k: np.concatenate([p[k] for p in parts]).astype(np.float32)
          for k in parts[0]}


def knn_top1(bank, bank_labels, queries, labels, mesh):
  """The monitor's weighted kNN (k=200, T=0.1), in percent."""
  rows = parallel.data_sharded(mesh)
  return 100 * knn.knn_accuracy(
      jax.device_put(bank, rows), jax.device_put(bank_labels, rows),
      jax.device_put(np.ones(len(bank), bool), rows), queries, labels,
      np.ones(len(queries), bool), mesh, k=200, temperature=0.1,
      num_classes=int(bank_labels.max()) + 1)


def main(workdir, step=None):
  backbone = simsiam_jax.load_backbone(workdir, step)
  x_train, y_train = idx_files.read_split(idx_files.DEBIAN_DIR, 'train')
  x_test, y_test = idx_files.read_split(idx_files.DEBIAN_DIR, 'test')
  print(f'{workdir} step {backbone.step}', flush=True)
  start = time.time()
  train = stage_features(backbone, x_train)
  test = stage_features(backbone, x_test)
  print(f'features in {time.time() - start:.0f} s', flush=True)
  mesh = parallel.create_mesh()
  for name in train:
    top1 = knn_top1(train[name], y_train, test[name], y_test, mesh)
    print(f'{name:18s} dim {train[name].shape[1]:5d}  kNN {top1:.2f}',
          flush=True)


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
