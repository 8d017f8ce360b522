"""Sharded weighted kNN against a brute-force NumPy implementation, and the
monitor's baselines (raw pixels, random init) against the same by hand."""

import types

import jax
import numpy as np
import optax
import pytest

from configs import tiny
from simsiam_jax import checkpointing
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import pretrained
from simsiam_jax import state as state_lib
from simsiam_jax.data import synthetic
from simsiam_jax.evaluation import knn
from simsiam_jax.evaluation import monitor
from simsiam_jax.models import simsiam


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


def _pad_rows(arrays, multiple: int):
  """Pads each array's rows to a multiple; returns (padded arrays, mask)."""
  n = len(arrays[0])
  pad = (-n) % multiple
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  return [np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
          for a in arrays], mask


def _shard_rows(array, mesh):
  return jax.device_put(array, parallel.data_sharded(mesh))


@pytest.mark.parametrize('num_devices', [1, 8])
@pytest.mark.parametrize('k,temperature', [(20, 0.1), (200, 0.5), (1, 0.1)])
def test_matches_numpy(data, num_devices, k, temperature):
  train, train_labels, test, test_labels, num_classes = data
  mesh = parallel.create_mesh(jax.devices()[:num_devices])
  # 300 rows padded to a multiple of 8: padding must never be a neighbour.
  (train_p, labels_p), mask = _pad_rows([train, train_labels], 8)
  acc = knn.knn_accuracy(
      _shard_rows(train_p, mesh), _shard_rows(labels_p, mesh),
      _shard_rows(mask, mesh), test, test_labels, np.ones(90, bool), mesh,
      k=k, temperature=temperature, num_classes=num_classes, query_batch=32)
  want = _numpy_knn(train, train_labels, test, k, temperature, num_classes)
  assert acc == pytest.approx(np.mean(want == test_labels), abs=1e-9)
  counts = knn.knn_confusion(
      _shard_rows(train_p, mesh), _shard_rows(labels_p, mesh),
      _shard_rows(mask, mesh), test, test_labels, np.ones(90, bool), mesh,
      k=k, temperature=temperature, num_classes=num_classes, query_batch=32)
  want_counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(want_counts, (test_labels, want), 1)
  np.testing.assert_array_equal(counts, want_counts)
  assert knn.per_class(counts) == [
      float(np.mean(want[test_labels == c] == c)) for c in range(num_classes)]
  # Better than chance on clustered data, so the comparison means something.
  assert acc > 2 / num_classes


def test_masked_queries_do_not_count(data):
  train, train_labels, test, test_labels, num_classes = data
  mesh = parallel.create_mesh()
  (train_p, labels_p), mask = _pad_rows([train, train_labels], 8)
  args = (_shard_rows(train_p, mesh), _shard_rows(labels_p, mesh),
          _shard_rows(mask, mesh))
  test_mask = np.arange(90) < 45
  acc = knn.knn_accuracy(*args, test, test_labels, test_mask, mesh, k=20,
                         num_classes=num_classes, query_batch=32)
  want = _numpy_knn(train, train_labels, test[:45], 20, 0.1, num_classes)
  assert acc == pytest.approx(np.mean(want == test_labels[:45]))
  counts = knn.knn_confusion(*args, test, test_labels, test_mask, mesh, k=20,
                             num_classes=num_classes, query_batch=32)
  assert counts.sum() == 45


def test_a_class_without_queries_has_no_per_class_top1():
  assert knn.per_class(np.array([[3, 1], [0, 0]])) == [0.75, None]


# Baselines of the kNN monitor: raw pixels and the random initialisation.


def _config(cache_dir, **overrides):
  c = tiny.get_config()
  c.eval.batch_size = 64
  c.knn.k = 20
  c.knn.cache_dir = str(cache_dir)
  c.update_from_flattened_dict(overrides)
  return c


def _monitor(config):
  return monitor.KnnMonitor(config, simsiam.create_model(config.model),
                            parallel.create_mesh())


@pytest.fixture(scope='module')
def baselines(tmp_path_factory):
  """A monitor on the tiny synthetic set (256 train, 64 test), its baselines."""
  config = _config(tmp_path_factory.mktemp('cache'))
  mon = _monitor(config)
  return config, mon, mon.baselines()


def _split(config, split):
  dc = config.data
  return synthetic.labelled_images(dc.synthetic_num_examples, dc.image_size,
                                   dc.channels, config.seed, split)


def test_raw_pixel_baseline_is_knn_on_flattened_images(baselines):
  config, _, values = baselines
  (train, train_labels), (test, test_labels) = (
      _split(config, s) for s in ('train', 'test'))
  want = _numpy_knn(train.reshape(len(train), -1), train_labels,
                    test.reshape(len(test), -1), 20, 0.1, 10)
  assert values['knn_raw_pixels'] == pytest.approx(
      np.mean(want == test_labels), abs=1e-9)


def test_random_init_baseline_uses_bn_batch_statistics(baselines):
  config, mon, values = baselines
  variables = mon.random_init_variables(config.seed)
  # The very network pretraining starts from.
  start = state_lib.create(
      state_lib.simsiam_initializer(mon.model, optax.sgd(0.1), (16, 16, 3)),
      mon.mesh, jax.random.key(config.seed))
  jax.tree.map(np.testing.assert_array_equal, variables['params'],
               start.params)
  variables = jax.device_get(variables)
  features = {}
  for split in ('train', 'test'):
    images, labels = _split(config, split)
    # By hand: BN on the statistics of each batch of 64, as the monitor batches.
    features[split] = np.concatenate([np.asarray(mon.model.apply(
        variables, images[i:i + 64], train=True, method='features',
        mutable=['batch_stats'])[0]) for i in range(0, len(images), 64)])
    got, got_labels = mon.host_features(variables, split, 'batch_stats')
    np.testing.assert_allclose(got, features[split], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got_labels, labels)
    inference, _ = mon.host_features(variables, split, 'inference')
    assert np.max(np.abs(inference - got)) > 0.1  # running averages 0/1 differ
  _, train_labels = _split(config, 'train')
  _, test_labels = _split(config, 'test')
  want = _numpy_knn(features['train'], train_labels, features['test'], 20, 0.1,
                    10)
  assert values['knn_random_init'] == pytest.approx(
      np.mean(want == test_labels), abs=1e-9)


def test_padding_rows_do_not_enter_batch_statistics():
  batch = {'image': np.arange(5, dtype=np.float32)[:, None] + 1,
           'label': np.zeros(5, np.int32),
           'mask': np.array([True, True, False, False, False])}
  filled = monitor._fill_padding(batch)  # pylint: disable=protected-access
  np.testing.assert_array_equal(filled['image'][:, 0], [1, 2, 1, 2, 1])
  np.testing.assert_array_equal(batch['image'][:, 0], [1, 2, 3, 4, 5])


def test_baselines_are_cached_on_disk_by_key(baselines, monkeypatch, caplog):
  config, _, values = baselines
  calls = []

  def score(self, variables, kind='inference'):
    calls.append(kind)
    raise AssertionError('computed again')

  monkeypatch.setattr(monitor.KnnMonitor, 'score', score)
  again = _monitor(config)  # a new run: only the disk cache is shared
  assert again.baselines() == values and not calls
  # The log line shows them next to the network's score.
  monkeypatch.setattr(monitor.KnnMonitor, 'confusion',  # top-1 0.5
                      lambda self, variables, kind='inference': np.ones((2, 2)))
  with caplog.at_level('INFO'):
    again(types.SimpleNamespace(params={}, batch_stats={}))
  assert (f'kNN (k=20, T=0.1) top-1 on test: SimSiam 50.00% | raw pixels '
          f'{100 * values["knn_raw_pixels"]:.2f}% | random init '
          f'{100 * values["knn_random_init"]:.2f}% (BN batch statistics)'
          ) in caplog.text

  def counted(self, variables, kind='inference'):
    calls.append(kind)
    return 0.25

  monkeypatch.setattr(monitor.KnnMonitor, 'score', counted)
  other_k = _monitor(_config(config.knn.cache_dir, **{'knn.k': 5}))
  assert other_k.baselines() == {'knn_raw_pixels': 0.25,
                                 'knn_random_init': 0.25}
  assert calls == ['pixels', 'batch_stats']
  other_seed = _monitor(config)
  assert other_seed.baselines(seed=1) == {**values, 'knn_random_init': 0.25}
  assert calls == ['pixels', 'batch_stats', 'batch_stats']
  other_seed.baselines(seed=1)  # in memory
  assert len(calls) == 3


def test_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
  (tmp_path / 'file').write_text('not a directory')
  config = _config(tmp_path / 'file' / 'cache')
  monkeypatch.setattr(monitor.KnnMonitor, 'score',
                      lambda self, variables, kind='inference': 0.5)
  assert _monitor(config).baselines() == {'knn_raw_pixels': 0.5,
                                          'knn_random_init': 0.5}
  with config.unlocked():
    config.knn.max_pixel_dim = 100  # 16 x 16 x 3 images: no pixel baseline
    config.knn.cache_dir = str(tmp_path)
  assert list(_monitor(config).baselines()) == ['knn_random_init']


def _saved_run(config, mon, path):
  """(state, knn_eval config of it): a run's step-0 checkpoint in `path`."""
  tx, _ = optim.create_optimizer(config, 1, 1 << 30)
  state = state_lib.create(
      state_lib.simsiam_initializer(mon.model, tx, (16, 16, 3)),
      mon.mesh, jax.random.key(config.seed))
  ckpt = checkpointing.Checkpointer(str(path), config)
  ckpt.save(0, state, force=True)
  ckpt.wait()
  config = config.copy_and_resolve_references()
  config.mode = 'knn_eval'
  config.pretrained.workdir = str(path)
  return state, config


def test_knn_eval_mode_reports_the_baselines(baselines, tmp_path):
  config, mon, values = baselines
  state, config = _saved_run(config, mon, tmp_path / 'pretrain')
  summary = pretrained.knn_eval(config, str(tmp_path / 'eval'))
  assert summary['knn_raw_pixels'] == values['knn_raw_pixels']
  assert summary['knn_random_init'] == values['knn_random_init']
  # The same network, scored with BN running averages (mean 0, var 1).
  assert summary['knn_top1'] == mon(state)


def test_knn_eval_per_class_averages_to_the_top1(baselines, tmp_path):
  """knn.per_class: the checkpoint's and the pixels' top-1 of each class,
  weighted by the test split's class counts, give back knn_top1 and
  knn_raw_pixels."""
  config, mon, values = baselines
  _, config = _saved_run(config, mon, tmp_path / 'pretrain')
  config.knn.per_class = True
  summary = pretrained.knn_eval(config, str(tmp_path / 'eval'))
  labels = _split(config, config.data.eval_split)[1]
  counts = np.bincount(labels, minlength=synthetic.NUM_CLASSES)
  for name, top1 in (('knn_per_class', 'knn_top1'),
                     ('knn_per_class_raw_pixels', 'knn_raw_pixels')):
    got = summary[name]
    assert len(got) == synthetic.NUM_CLASSES
    weighted = sum(n * v for n, v in zip(counts, got) if v is not None)
    assert weighted / counts.sum() == pytest.approx(summary[top1], abs=1e-9)
  assert summary['knn_raw_pixels'] == values['knn_raw_pixels']


def test_knn_eval_per_class_scores_the_pixels_once(baselines, tmp_path,
                                                   monkeypatch):
  """With no cached baselines, the raw-pixel kNN that gives knn_raw_pixels
  also gives the pixels' per-class top-1: their features are extracted
  once, not twice."""
  config, mon, values = baselines
  _, config = _saved_run(config, mon, tmp_path / 'pretrain')
  config.knn.per_class = True
  config.knn.cache_dir = str(tmp_path / 'cold_cache')
  kinds = []
  features = monitor.KnnMonitor.features

  def counted(self, variables, split, kind='inference'):
    kinds.append((split, kind))
    return features(self, variables, split, kind)

  monkeypatch.setattr(monitor.KnnMonitor, 'features', counted)
  summary = pretrained.knn_eval(config, str(tmp_path / 'eval'))
  assert kinds.count((config.data.train_split, 'pixels')) == 1
  assert summary['knn_raw_pixels'] == values['knn_raw_pixels']
