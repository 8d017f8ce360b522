"""Data resident on the devices, sampled and augmented inside the train step.

A whole TensorFlow-free run on resident real images is in test_cli.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from simsiam_jax import parallel
from simsiam_jax.data import errors
from simsiam_jax.data import resident
from simsiam_jax.data import sources


def _identity_aug(c):
  """No randomness left but the sampling: full-image crops, no colour ops."""
  aug = c.data.aug
  aug.crop_scale, aug.crop_ratio = (1.0, 1.0), (1.0, 1.0)
  aug.flip_prob = aug.jitter_prob = aug.grayscale_prob = aug.blur_prob = 0.0
  aug.mean, aug.std = (0.0,) * 3, (1.0,) * 3


def test_each_device_visits_its_shard_once_per_epoch():
  mesh = parallel.create_mesh()
  c = tiny.get_config()
  c.batch_size = 32  # 4 per device
  c.data.image_size = 8
  c.data.augment_on, c.data.resident = 'device', True
  _identity_aug(c)
  n = 256
  ids = np.arange(n)
  images = np.zeros((n, 8, 8, 3), np.uint8)
  images[..., 0] = (ids // 16)[:, None, None]
  images[..., 1] = (ids % 16)[:, None, None]
  data = {'images': jax.device_put(images, parallel.data_sharded(mesh))}
  steps_per_epoch = n // c.batch_size
  views = jax.jit(lambda b, s: resident.two_views(
      b, s, config=c, mesh=mesh, steps_per_epoch=steps_per_epoch))

  def ids_at(step):
    v = np.asarray(views(data, step)['view1'])
    np.testing.assert_allclose(v * 255, np.round(v * 255), atol=1e-3)
    return (np.round(v[:, 0, 0, 0] * 255) * 16 +
            np.round(v[:, 0, 0, 1] * 255)).astype(int)

  epoch0 = np.concatenate([ids_at(s) for s in range(steps_per_epoch)])
  epoch1 = np.concatenate([ids_at(s) for s in range(steps_per_epoch,
                                                    2 * steps_per_epoch)])
  np.testing.assert_array_equal(np.sort(epoch0), ids)
  np.testing.assert_array_equal(np.sort(epoch1), ids)
  assert (epoch0 != epoch1).any()
  # Device d's part of the batch comes from its own shard (rows d*32..d*32+31).
  first = ids_at(0).reshape(8, 4)
  assert ((first // 32) == np.arange(8)[:, None]).all()


def test_missing_files_name_the_package(tmp_path):
  c = tiny.get_config()
  c.data.dataset = 'fashion_mnist_debian'
  c.data.manual_dir = str(tmp_path)
  with pytest.raises(errors.ResidentDataError, match='dataset-fashion-mnist'):
    resident.load_uint8(c, 'train')


@pytest.mark.parametrize('overrides,match', [
    ({'resident': True}, 'augment_on=device'),
    ({'augment_on': 'gpu'}, 'augment_on must be one of'),
    ({'aug.crop_size': -1}, 'crop_size must be >= 0'),
    ({'aug.mean': (0.5,)}, 'one value per channel'),
])
def test_bad_data_config_is_refused_before_reading(overrides, match):
  c = tiny.get_config()
  c.data.dataset = 'no_such_dataset'  # reading it would fail otherwise
  for k, v in overrides.items():
    section, _, name = k.rpartition('.')
    (c.data[section] if section else c.data)[name] = v
  with pytest.raises(errors.DataConfigError, match=match):
    sources.make_train_source(c, parallel.create_mesh(), c.batch_size)


@pytest.mark.parametrize('n', [1, 2, 3, 17, 1000, 7500, 60000])
def test_permuted_index_is_a_permutation(n):
  key = jax.random.key(n)
  perm = np.asarray(resident.permuted_index(jnp.arange(n), n, key))
  np.testing.assert_array_equal(np.sort(perm), np.arange(n))
  if n >= 1000:  # and a shuffled one: other keys, other orders, no trend
    other = np.asarray(resident.permuted_index(jnp.arange(n), n,
                                               jax.random.key(n + 1)))
    assert np.mean(perm == other) < 0.01
    assert abs(np.corrcoef(np.arange(n), perm)[0, 1]) < 0.1
    # Any slice of it (a step's batch) is drawn independently of the rest.
    np.testing.assert_array_equal(
        resident.permuted_index(jnp.arange(100, 356), n, key), perm[100:356])


def test_resident_eval_images_are_normalised_on_device():
  from simsiam_jax.data import device_augment  # pylint: disable=g-import-not-at-top
  aug = tiny.get_config().data.aug
  grey = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1), np.uint8)
  got = np.asarray(device_augment.network_input(jnp.asarray(grey), aug))
  want = ((np.repeat(grey, 3, -1) / np.float32(255) - np.float32(aug.mean)) /
          np.float32(aug.std))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  floats = jnp.asarray(want)  # host-pipeline batches are already normalised
  np.testing.assert_array_equal(device_augment.network_input(floats, aug),
                                floats)


def test_crop_size_sets_the_training_views_size():
  """data.aug.crop_size: training views at their own size (the network and
  its evaluation stay at data.image_size)."""
  mesh = parallel.create_mesh()
  c = tiny.get_config()
  c.batch_size = 16
  c.data.image_size = 12
  c.data.augment_on, c.data.resident = 'device', True
  _identity_aug(c)
  images = np.tile(np.arange(12, dtype=np.uint8)[None, None, :, None] * 20,
                   (64, 12, 1, 3))  # a horizontal ramp
  data = {'images': jax.device_put(images, parallel.data_sharded(mesh))}
  for crop, want in ((0, 12), (8, 8)):
    c.data.aug.crop_size = crop
    v = jax.jit(lambda b, s: resident.two_views(
        b, s, config=c, mesh=mesh, steps_per_epoch=4))(data, 0)['view1']
    assert v.shape == (16, want, want, 3)
    # The whole image, resized: the ramp runs from its first to its last value.
    row = np.asarray(v[0, want // 2, :, 0]) * 255
    assert np.all(np.diff(row) > 0) and row[0] < 40 and row[-1] > 180
