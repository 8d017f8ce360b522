"""Weighted kNN monitor (InstDisc-style, as in the SimSiam seed's monitor).

Each query votes with its k most similar bank features, weighted by
exp(similarity / T); features are l2-normalised pooled backbone outputs.

The bank stays sharded along its rows over the mesh: every device takes the
top-k of its own rows, and only those k candidates per query (not the bank)
are gathered for the final top-k. Ties keep the lower bank index, as a stable
sort would.
"""

import functools

import jax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from simsiam_jax import losses
from simsiam_jax import parallel


def _local_topk(queries, bank, bank_labels, bank_mask, *, k):
  """Top-k of this device's bank rows: (similarities, labels), each [Q, k]."""
  sim = queries @ bank.T  # [Q, n_local]
  sim = jnp.where(bank_mask[None, :], sim, -jnp.inf)
  top_sim, top_idx = jax.lax.top_k(sim, k)
  return top_sim, bank_labels[top_idx]


def knn_predict(queries: jax.Array, bank: jax.Array, bank_labels: jax.Array,
                bank_mask: jax.Array, mesh, *, k: int, temperature: float,
                num_classes: int) -> jax.Array:
  """Predicted classes [Q] of l2-normalised queries [Q, D].

  Args:
    queries: [Q, D], replicated.
    bank: [N, D] l2-normalised features, sharded along N on `mesh`.
    bank_labels: [N] int, sharded like `bank`.
    bank_mask: [N] bool, False for padding rows.
    mesh: the ('data',) mesh.
    k, temperature, num_classes: kNN settings.
  """
  n_local = bank.shape[0] // mesh.devices.size
  k_local = min(k, n_local)
  axis = parallel.DATA_AXIS

  def per_device(q, b, bl, bm):
    s, l = _local_topk(q, b, bl, bm, k=k_local)
    # Candidates of every device, in device order (= bank order).
    s = jax.lax.all_gather(s, axis, axis=1, tiled=True)
    l = jax.lax.all_gather(l, axis, axis=1, tiled=True)
    return s, l

  sims, labels = jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(P(), P(axis), P(axis), P(axis)), out_specs=(P(), P()),
      check_vma=False)(queries, bank, bank_labels, bank_mask)
  top_sim, top_pos = jax.lax.top_k(sims, min(k, sims.shape[1]))
  top_labels = jnp.take_along_axis(labels, top_pos, axis=1)
  weights = jnp.exp(top_sim / temperature)  # padding rows: exp(-inf) = 0
  scores = jnp.sum(jax.nn.one_hot(top_labels, num_classes) * weights[..., None],
                   axis=1)
  return jnp.argmax(scores, axis=-1)


def knn_confusion(train_feats, train_labels, train_mask, test_feats,
                  test_labels, test_mask, mesh, *, k: int = 200,
                  temperature: float = 0.1, num_classes: int,
                  query_batch: int = 1024) -> np.ndarray:
  """Counts [C, C] of weighted-kNN predictions: row the true class, column
  the predicted one; masked queries are left out. Features need not be
  normalised.

  `train_*` are the bank, sharded on the mesh; `test_*` are numpy arrays or
  jax Arrays of the queries.
  """
  bank = _normalize_sharded(train_feats, mesh)
  predict = jax.jit(functools.partial(
      knn_predict, mesh=mesh, k=k, temperature=temperature,
      num_classes=num_classes))
  counts = np.zeros((num_classes, num_classes), np.int64)
  test_feats = np.asarray(test_feats)
  for start in range(0, len(test_feats), query_batch):
    q = test_feats[start:start + query_batch]
    n = len(q)
    if n < query_batch:  # one compiled shape
      q = np.concatenate([q, np.zeros((query_batch - n, q.shape[1]), q.dtype)])
    q = jax.device_put(losses.l2_normalize(jnp.asarray(q)),
                       parallel.replicated(mesh))
    pred = parallel.to_host(predict(q, bank, train_labels, train_mask))[:n]
    m = np.asarray(test_mask[start:start + n], bool)
    np.add.at(counts, (np.asarray(test_labels[start:start + n])[m], pred[m]), 1)
  return counts


def accuracy(counts: np.ndarray) -> float:
  """Top-1 of a confusion matrix: its trace over its sum (0 when empty)."""
  return float(np.trace(counts)) / max(int(counts.sum()), 1)


def per_class(counts: np.ndarray) -> list:
  """Top-1 of each true class (a row of `counts`); None for a class with no
  queries."""
  return [float(row[c] / row.sum()) if row.sum() else None
          for c, row in enumerate(counts)]


def knn_accuracy(*args, **kwargs) -> float:
  """Top-1 accuracy of weighted kNN; the arguments of `knn_confusion`."""
  return accuracy(knn_confusion(*args, **kwargs))


def _normalize_sharded(x, mesh):
  return jax.jit(losses.l2_normalize,
                 out_shardings=parallel.data_sharded(mesh))(x)

