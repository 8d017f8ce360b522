"""Sharded weighted kNN against a brute-force NumPy implementation."""

import jax
import numpy as np
import pytest

from simsiam_jax import parallel
from simsiam_jax.evaluation import knn


def _numpy_knn(train, train_labels, test, k, temperature, num_classes):
  """Brute force: stable top-k of cosine similarity, exp(sim/T)-weighted votes."""
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  test = test / np.linalg.norm(test, axis=1, keepdims=True)
  sim = test @ train.T
  idx = np.argsort(-sim, axis=1, kind='stable')[:, :k]
  w = np.exp(np.take_along_axis(sim, idx, 1) / temperature)
  votes = np.zeros((len(test), num_classes))
  for c in range(num_classes):
    votes[:, c] = np.sum(w * (train_labels[idx] == c), axis=1)
  return np.argmax(votes, axis=1)


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  num_classes, dim = 7, 16
  centres = rng.standard_normal((num_classes, dim))
  train_labels = rng.integers(0, num_classes, 300).astype(np.int32)
  test_labels = rng.integers(0, num_classes, 90).astype(np.int32)
  train = (centres[train_labels] + 1.5 * rng.standard_normal((300, dim))
           ).astype(np.float32)
  test = (centres[test_labels] + 1.5 * rng.standard_normal((90, dim))
          ).astype(np.float32)
  return train, train_labels, test, test_labels, num_classes


@pytest.mark.parametrize('num_devices', [1, 8])
@pytest.mark.parametrize('k,temperature', [(20, 0.1), (200, 0.5), (1, 0.1)])
def test_matches_numpy(data, num_devices, k, temperature):
  train, train_labels, test, test_labels, num_classes = data
  mesh = parallel.create_mesh(jax.devices()[:num_devices])
  # 300 rows padded to a multiple of 8: padding must never be a neighbour.
  (train_p, labels_p), mask = knn.pad_rows([train, train_labels], 8)
  acc = knn.knn_accuracy(
      knn.shard_rows(train_p, mesh), knn.shard_rows(labels_p, mesh),
      knn.shard_rows(mask, mesh), test, test_labels, np.ones(90, bool), mesh,
      k=k, temperature=temperature, num_classes=num_classes, query_batch=32)
  want = _numpy_knn(train, train_labels, test, k, temperature, num_classes)
  assert acc == pytest.approx(np.mean(want == test_labels), abs=1e-9)
  # Better than chance on clustered data, so the comparison means something.
  assert acc > 2 / num_classes


def test_masked_queries_do_not_count(data):
  train, train_labels, test, test_labels, num_classes = data
  mesh = parallel.create_mesh()
  (train_p, labels_p), mask = knn.pad_rows([train, train_labels], 8)
  args = (knn.shard_rows(train_p, mesh), knn.shard_rows(labels_p, mesh),
          knn.shard_rows(mask, mesh))
  test_mask = np.arange(90) < 45
  acc = knn.knn_accuracy(*args, test, test_labels, test_mask, mesh, k=20,
                         num_classes=num_classes, query_batch=32)
  want = _numpy_knn(train, train_labels, test[:45], 20, 0.1, num_classes)
  assert acc == pytest.approx(np.mean(want == test_labels[:45]))
