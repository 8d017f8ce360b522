"""TFDS sources and the tf.data two-view pipeline on a small Fashion-MNIST-format set."""

import json
import os
import time

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

from configs import fashion_mnist as fm_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import idx_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import tfds_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import fmnist_files  # pylint: disable=g-import-not-at-top,wrong-import-position

N_TRAIN, N_TEST = 96, 40


@pytest.fixture(scope='module')
def small_fmnist(tmp_path_factory):
  """A data config over a 136-image Fashion-MNIST-format set, prepared by our builder."""
  root = tmp_path_factory.mktemp('fmnist')
  manual = root / 'manual'
  manual.mkdir()
  fmnist_files.write_random(manual, N_TRAIN, N_TEST)
  dc = fm_config.get_config().data
  dc.data_dir = str(root / 'tfds')
  dc.manual_dir = str(manual)
  dc.shuffle_buffer = 128
  # The tf.data path with host augmentation, whatever the demo's default.
  dc.augment_on, dc.resident = 'host', False
  builder = tfds_pipeline.get_builder(dc)
  return dc, builder


def test_builder_prepares_from_idx_files(small_fmnist):
  dc, builder = small_fmnist
  assert builder.is_prepared()
  assert tfds_pipeline.num_examples(builder, 'train') == N_TRAIN
  assert tfds_pipeline.num_examples(builder, 'test') == N_TEST
  # Prepared once: a second builder finds it and does not need the files.
  dc2 = dc.copy_and_resolve_references()
  dc2.manual_dir = '/nonexistent'
  assert tfds_pipeline.get_builder(dc2).is_prepared()


def _first_batches(dc, builder, seed, n=2, process_index=0, process_count=1,
                   batch=8):
  ds = tfds_pipeline.train_dataset(dc, builder, seed, batch, process_index,
                              process_count)
  it = tfds_pipeline.as_numpy(ds)
  return [next(it) for _ in range(n)]


def test_train_batches_shape_and_views(small_fmnist):
  dc, builder = small_fmnist
  (b, _) = _first_batches(dc, builder, seed=0)
  assert b['view1'].shape == (8, 28, 28, 3) and b['view1'].dtype == np.float32
  assert b['label'].shape == (8,)
  # Grayscale repeated to 3 channels, before and after augmentation.
  np.testing.assert_array_equal(b['view1'][..., 0], b['view1'][..., 2])
  # The two views of an image differ.
  assert np.abs(b['view1'] - b['view2']).mean() > 0.05


def test_same_seed_same_views_other_seed_differs(small_fmnist):
  dc, builder = small_fmnist
  a = _first_batches(dc, builder, seed=3)
  b = _first_batches(dc, builder, seed=3)
  c = _first_batches(dc, builder, seed=4)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert not np.array_equal(a[0]['view1'], c[0]['view1'])


def test_skip_to_step_resumes_the_stream(small_fmnist):
  dc, builder = small_fmnist
  full = _first_batches(dc, builder, seed=5, n=3)
  resumed = tfds_pipeline.as_numpy(tfds_pipeline.train_dataset(dc, builder, 5, 8, 0, 1,
                                                     start_step=2))
  np.testing.assert_array_equal(next(resumed)['view2'], full[2]['view2'])


def _ids(images):
  """The ids written into the corner pixels, read back from raw eval images."""
  return set(np.round(images[:, 0, 0, 0]).astype(int)
             + 256 * np.round(images[:, 0, 1, 0]).astype(int))


def test_processes_read_disjoint_examples_covering_the_split(small_fmnist):
  dc, builder = small_fmnist
  raw = dc.copy_and_resolve_references()
  raw.aug.mean, raw.aug.std = (0.0,) * 3, (1 / 255,) * 3  # pixel values back
  seen = []
  for p in range(2):
    ids = set()
    for batch in tfds_pipeline.as_numpy(tfds_pipeline.eval_dataset(raw, builder, 'test',
                                                         16, p, 2)):
      ids |= _ids(batch['image'][batch['mask']])
    seen.append(ids)
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(N_TEST))


def test_eval_batches_are_padded_and_masked(small_fmnist):
  dc, builder = small_fmnist
  batches = list(tfds_pipeline.as_numpy(tfds_pipeline.eval_dataset(dc, builder, 'test',
                                                         16, 0, 1)))
  assert [b['image'].shape[0] for b in batches] == [16, 16, 16]
  assert sum(int(b['mask'].sum()) for b in batches) == N_TEST


def test_unprepared_dataset_fails_fast_with_instructions(tmp_path):
  dc = fm_config.get_config().data
  dc.dataset = 'cifar10'
  dc.data_dir = str(tmp_path)
  for allow in (False, True):
    dc.allow_download = allow
    t = time.time()
    with pytest.raises(errors.DatasetNotReady, match='tfds build cifar10'):
      tfds_pipeline.get_builder(dc)
    assert time.time() - t < 10


def test_missing_debian_files_name_the_package(tmp_path):
  dc = fm_config.get_config().data
  dc.data_dir = str(tmp_path / 'tfds')
  dc.manual_dir = str(tmp_path)
  with pytest.raises(errors.DatasetNotReady,
                     match='apt-get install -y dataset-fashion-mnist'):
    tfds_pipeline.get_builder(dc)


def test_unknown_dataset_name():
  dc = fm_config.get_config().data
  dc.dataset = 'no_such_dataset_xyz'
  with pytest.raises(ValueError, match='Unknown dataset'):
    tfds_pipeline.get_builder(dc)


@pytest.mark.skipif(not os.path.isdir(idx_files.DEBIAN_DIR),
                    reason='Debian package dataset-fashion-mnist not installed '
                    '(make test installs it when run as root)')
def test_debian_files_read():
  images = idx_files.read_idx(os.path.join(
      idx_files.DEBIAN_DIR, 't10k-images-idx3-ubyte.gz'))
  labels = idx_files.read_idx(os.path.join(
      idx_files.DEBIAN_DIR, 't10k-labels-idx1-ubyte.gz'))
  assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
  assert set(np.unique(labels)) == set(range(10))


def test_pretraining_on_tfds_ends_with_knn(small_fmnist, tmp_path):
  """The trainer on a TFDS dataset, through the tf.data pipeline, scores kNN."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from simsiam_jax import train  # pylint: disable=g-import-not-at-top
  dc, _ = small_fmnist
  config = tiny.get_config()
  with config.unlocked():
    config.data = dc.copy_and_resolve_references()
  config.data.image_size = 16
  config.batch_size = 16
  config.num_train_steps = 3
  config.knn.every_epochs = 0
  config.eval.batch_size = 16
  config.knn.k = 10
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['step'] == 3
  # 40 test images: accuracy is a multiple of 1/40.
  assert 0.0 <= summary['knn_top1'] <= 1.0
  assert abs(summary['knn_top1'] * N_TEST - round(summary['knn_top1'] * N_TEST)) < 1e-6
  # The best-by-kNN checkpoint is kept apart from the latest ones.
  assert os.listdir(tmp_path / 'checkpoint_best') == ['3']


N_CONST = 100


@pytest.fixture(scope='module')
def constant_fmnist(tmp_path_factory):
  """A data config whose train image i is the constant i (labels i % 10).

  The value survives crops, flips and resizes, so it names the example
  behind every augmented view; augmentations that change values are off.
  """
  root = tmp_path_factory.mktemp('fmnist_const')
  manual = root / 'manual'
  manual.mkdir()
  for split, n in (('train', N_CONST), ('test', 20)):
    images = np.broadcast_to(np.arange(n)[:, None, None], (n, 28, 28))
    fmnist_files.write_split(manual, split, images, np.arange(n) % 10)
  dc = fm_config.get_config().data
  dc.data_dir = str(root / 'tfds')
  dc.manual_dir = str(manual)
  dc.shuffle_buffer = 128
  dc.augment_on, dc.resident = 'host', False
  dc.aug.jitter_prob = dc.aug.grayscale_prob = dc.aug.blur_prob = 0.0
  dc.aug.mean, dc.aug.std = (0.0,) * 3, (1 / 255,) * 3  # pixel values back
  return dc, tfds_pipeline.get_builder(dc)


def _example_ids(batch):
  return np.round(batch['image'].mean(axis=(1, 2, 3))).astype(int)


def _ids_by_index(builder):
  """Example id of each train example index (the unshuffled read order)."""
  ds = tfds_pipeline._in_index_order(builder, 'train', None)  # pylint: disable=protected-access
  return np.array([int(ex['image'][0, 0, 0]) for ex in tfds_pipeline.as_numpy(ds)])


def test_split_labels_are_in_example_index_order(constant_fmnist):
  _, builder = constant_fmnist
  labels = tfds_pipeline.split_labels(builder, 'train')
  ids = _ids_by_index(builder)
  assert sorted(ids) == list(range(N_CONST))
  np.testing.assert_array_equal(labels, ids % 10)


def _subset_stream(dc, builder, indices, n, process_index=0, process_count=1,
                   start_step=0, batch=8, seed=0):
  share = sources.process_share(indices, process_index, process_count)
  it = tfds_pipeline.as_numpy(tfds_pipeline.train_dataset(
      dc, builder, seed, batch, process_index, process_count, start_step,
      views=1, indices=share))
  return [next(it) for _ in range(n)]


def test_tfds_training_draws_only_the_subset(constant_fmnist):
  dc, builder = constant_fmnist
  labels = tfds_pipeline.split_labels(builder, 'train')
  indices = sources.select_subset(labels, 0.2, seed=0)
  assert len(indices) == 20 and np.bincount(labels[indices]).tolist() == [2] * 10
  want = set(_ids_by_index(builder)[indices].tolist())
  batches = _subset_stream(dc, builder, indices, n=3 * 20 // 8)  # 3 epochs
  drawn = np.concatenate([_example_ids(b) for b in batches])
  assert set(drawn.tolist()) == want
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches]),
                                drawn % 10)
  # Two processes: disjoint shares of the same subset, covering it.
  seen = [set(np.concatenate([_example_ids(b) for b in _subset_stream(
      dc, builder, indices, n=6, process_index=p, process_count=2,
      batch=4)]).tolist()) for p in range(2)]
  assert not seen[0] & seen[1] and seen[0] | seen[1] == want
  # A resume at step 4 continues the same stream.
  resumed = _subset_stream(dc, builder, indices, n=1, start_step=4)
  np.testing.assert_array_equal(resumed[0]['image'], batches[4]['image'])


def test_scratch_finetuning_on_a_tfds_label_subset(constant_fmnist, tmp_path):
  """classify on the tf.data path: trains on the recorded 20 % subset."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from simsiam_jax import classify  # pylint: disable=g-import-not-at-top
  dc, builder = constant_fmnist
  config = tiny.get_config()
  with config.unlocked():
    config.data = dc.copy_and_resolve_references()
  config.update_from_flattened_dict({
      'mode': 'finetune', 'data.image_size': 16, 'batch_size': 16,
      'num_train_steps': 2, 'eval.batch_size': 16,
      'classifier.from_scratch': True, 'classifier.label_fraction': 0.2})
  summary = classify.train_and_evaluate(config, str(tmp_path))
  assert summary['num_train_examples'] == 20 and summary['step'] == 2
  assert 0.0 <= summary['finetune_top1'] <= 1.0
  with open(tmp_path / classify.SUBSET_FILE) as f:
    record = json.load(f)
  labels = tfds_pipeline.split_labels(builder, 'train')
  assert record['indices'] == sources.select_subset(
      labels, 0.2, 0).tolist()


def _jpeg(h=375, w=500):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  img = (255 * np.kron(rng.random((h // 25, w // 25, 3)), np.ones((25, 25, 1))))
  buf = io.BytesIO()
  Image.fromarray(img.astype(np.uint8)).save(buf, format='JPEG', quality=95)
  return buf.getvalue()


def test_imagenet_train_crop_decodes_only_the_window():
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  dc = imagenet.get_config().data
  jpeg = _jpeg()
  seed = tf.constant([3, 4], tf.int64)
  got = tfds_pipeline._crop_train({'image': tf.constant(jpeg)}, seed, None, dc)
  # Same window cut from the fully decoded image, then resized.
  full = tf.cast(tf.io.decode_jpeg(jpeg), tf.float32) / 255.0
  w = tfds_pipeline.augment.crop_window(tf.shape(full)[:2], seed,
                                   dc.aug.crop_scale, dc.aug.crop_ratio)
  want = tfds_pipeline.augment.resize(
      tf.image.crop_to_bounding_box(full, w[0], w[1], w[2], w[3]), 224)
  assert got.shape == (224, 224, 3)
  # The fused op decodes the same pixels (up to JPEG block decoding).
  assert float(tf.reduce_mean(tf.abs(got - want))) < 2e-3


def test_imagenet_eval_resizes_256_and_centre_crops_224():
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  dc = imagenet.get_config().data
  dc.aug.mean, dc.aug.std = (0.0,) * 3, (1.0,) * 3
  jpeg = _jpeg(375, 500)
  got = tfds_pipeline.eval_image({'image': tf.constant(jpeg)}, None, dc).numpy()
  full = tf.cast(tf.io.decode_jpeg(jpeg), tf.float32) / 255.0
  resized = tf.image.resize(full, [256, 341], antialias=True).numpy()
  top, left = (256 - 224) // 2, (341 - 224) // 2
  np.testing.assert_allclose(got, resized[top:top + 224, left:left + 224],
                             atol=1e-5)
