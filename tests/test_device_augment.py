"""On-device augmentations (JAX) against the tf.data ones: op by op and in distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from simsiam_jax.data import device_augment as dev

tf = pytest.importorskip('tensorflow')
from simsiam_jax.data import augment as host  # pylint: disable=g-import-not-at-top,wrong-import-position

N_DRAWS = 2000


@pytest.fixture(scope='module')
def image():
  rng = np.random.default_rng(0)
  coarse = rng.random((8, 6, 3))
  return np.kron(coarse, np.ones((4, 4, 1))).astype(np.float32)  # [32, 24, 3]


@pytest.mark.parametrize('op,arg', [
    ('adjust_brightness', 1.3), ('adjust_brightness', 0.7),
    ('adjust_contrast', 1.4), ('adjust_contrast', 0.6),
    ('adjust_saturation', 1.4), ('adjust_saturation', 0.6),
    ('adjust_hue', 0.05), ('adjust_hue', -0.1),
])
def test_colour_ops_match_host(image, op, arg):
  want = getattr(host, op)(tf.constant(image), arg).numpy()
  got = np.asarray(jax.jit(getattr(dev, op))(image, arg))
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_grayscale_and_blur_match_host(image):
  np.testing.assert_allclose(np.asarray(dev.to_grayscale(image)),
                             host.to_grayscale(tf.constant(image)).numpy(),
                             atol=1e-6)
  for sigma, size in ((1.0, 9), (2.0, 23)):
    want = host.gaussian_blur(tf.constant(image), tf.constant(sigma), size)
    got = jax.jit(dev.gaussian_blur, static_argnums=2)(image, sigma, size)
    np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-5)


def test_whole_image_resize_matches_host(image):
  window = jnp.array([0.0, 0.0, 32.0, 24.0])
  for size in (16, 48):  # down (antialiased) and up
    got = dev.crop_and_resize(image, window, size)
    want = tf.image.resize(image, [size, size], method='bilinear',
                           antialias=True)
    np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-4)


def test_inner_window_matches_host_crop_away_from_its_border(image):
  window = [4, 2, 20, 16]  # oy, ox, h, w
  got = np.asarray(dev.crop_and_resize(image, jnp.array(window, jnp.float32),
                                       40))
  crop = tf.image.crop_to_bounding_box(image, *window)
  want = host.resize(crop, 40).numpy()
  # Only the outermost output pixels may see pixels beyond the window.
  np.testing.assert_allclose(got[2:-2, 2:-2], want[2:-2, 2:-2], atol=1e-4)
  assert np.abs(got - want).mean() < 0.01


def _host_windows(hw, scale, ratio, n=N_DRAWS):
  fn = tf.function(lambda s: host.crop_window(tf.constant(hw), s, scale, ratio))
  seeds = tf.random.experimental.stateless_split(tf.constant([1, 2], tf.int64), n)
  return tf.map_fn(fn, seeds, fn_output_signature=tf.int32).numpy().astype(float)


def _device_windows(hw, scale, ratio, n=N_DRAWS):
  keys = jax.random.split(jax.random.key(1), n)
  return np.asarray(jax.jit(jax.vmap(
      lambda k: dev.crop_window(hw, k, scale, ratio)))(keys))


@pytest.mark.parametrize('scale', [(0.2, 1.0), (0.08, 1.0)])
def test_crop_area_and_aspect_distributions_match_host(scale):
  hw, ratio = (64, 48), (3 / 4, 4 / 3)
  stats = []
  for w in (_host_windows(hw, scale, ratio), _device_windows(hw, scale, ratio)):
    area = w[:, 2] * w[:, 3] / (hw[0] * hw[1])
    log_aspect = np.log(w[:, 3] / w[:, 2])
    assert (w[:, 0] >= 0).all() and (w[:, 0] + w[:, 2] <= hw[0]).all()
    assert (w[:, 1] >= 0).all() and (w[:, 1] + w[:, 3] <= hw[1]).all()
    stats.append(np.array([area.mean(), area.std(), log_aspect.mean(),
                           log_aspect.std(), np.quantile(area, 0.1),
                           np.quantile(area, 0.9)]))
  # Standard errors at 2000 draws are below 0.007.
  np.testing.assert_allclose(stats[1], stats[0], atol=0.02)


def test_crop_fallback_is_the_host_centre_crop():
  # 8x200: no try fits, both take the centre crop clamped to ratio 4/3.
  hw = (8, 200)
  want = _host_windows(hw, (0.9, 1.0), (3 / 4, 4 / 3), n=1)[0]
  got = np.asarray(dev.crop_window(hw, jax.random.key(0), (0.9, 1.0),
                                   (3 / 4, 4 / 3)))
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got, [0, 94, 8, 11])


def _rates(views, original):
  """Fractions of views flipped, grayscale and colour-changed."""
  flipped = np.abs(views - original[:, ::-1]).max(axis=(1, 2, 3)) < \
      np.abs(views - original).max(axis=(1, 2, 3))
  gray = np.abs(views[..., 0] - views[..., 1]).max(axis=(1, 2)) < 1e-6
  return flipped.mean(), gray.mean()


def test_probabilities_match_host(image):
  aug = default.get_config().data.aug
  aug.mean, aug.std = (0.0,) * 3, (1.0,) * 3
  n = 1000
  seeds = tf.random.experimental.stateless_split(tf.constant([3, 4], tf.int64), n)
  host_views = tf.map_fn(
      tf.function(lambda s: host.augment_view(tf.constant(image), s, aug)),
      seeds, fn_output_signature=tf.float32).numpy()
  dev_views = np.asarray(jax.jit(
      lambda x, k: dev.augment_batch(x, k, aug))(
          np.broadcast_to(image, (n, *image.shape)), jax.random.key(5)))
  host_rates = _rates(host_views, image)
  dev_rates = _rates(dev_views, image)
  # flip 0.5; grayscale 0.2, plus jitter's saturation rarely reaching 0.
  for h, d, p in zip(host_rates, dev_rates, (0.5, 0.2)):
    assert abs(h - p) < 0.04 and abs(d - p) < 0.04, (host_rates, dev_rates)
  # Jitter applied with p = 0.8: the mean brightness of the non-flip,
  # non-gray change spreads the same way on both.
  h_mean = host_views.mean(axis=(1, 2, 3))
  d_mean = dev_views.mean(axis=(1, 2, 3))
  np.testing.assert_allclose(
      np.quantile(d_mean, [0.1, 0.25, 0.5, 0.75, 0.9]),
      np.quantile(h_mean, [0.1, 0.25, 0.5, 0.75, 0.9]), atol=0.02)
  unchanged = lambda v: np.mean(np.abs(v.mean(axis=(1, 2, 3)) - image.mean())
                                < 1e-4)
  # About 0.2 x 0.8 of the views are neither jittered nor gray.
  assert abs(unchanged(host_views) - unchanged(dev_views)) < 0.04


@pytest.mark.parametrize('crop_size', [0, 20])
def test_grey_images_augment_in_one_channel_as_in_three(crop_size):
  """The one-channel path equals augmenting the image repeated to RGB."""
  aug = default.get_config().data.aug
  aug.blur_prob, aug.blur_kernel_size = 0.5, 5
  aug.mean, aug.std = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)  # channels differ
  grey = np.random.default_rng(1).integers(0, 256, (64, 24, 24, 1), np.uint8)
  key = jax.random.key(7)
  fn = jax.jit(lambda x: dev.augment_batch(x, key, aug, crop_size=crop_size))
  one, three = fn(grey), fn(np.repeat(grey, 3, axis=-1))
  assert one.shape == three.shape == (64, crop_size or 24, crop_size or 24, 3)
  np.testing.assert_allclose(one, three, atol=2e-5)
  # The draws did change the images (not a pass-through on both paths).
  assert float(jnp.std(one[:, :, :, 0] - one[:1, :, :, 0])) > 0.1


def test_float_input_is_not_rescaled():
  aug = default.get_config().data.aug
  aug.flip_prob = aug.jitter_prob = aug.grayscale_prob = aug.blur_prob = 0.0
  aug.mean, aug.std = (0.0,) * 3, (1.0,) * 3
  grey = np.random.default_rng(2).integers(0, 256, (4, 8, 8, 1), np.uint8)
  from_uint8 = dev.augment_batch(grey, jax.random.key(0), aug)
  from_float = dev.augment_batch(grey.astype(np.float32) / 255.0,
                                 jax.random.key(0), aug)
  np.testing.assert_allclose(from_float, from_uint8, atol=1e-6)
  np.testing.assert_allclose(from_uint8[..., 1], grey[..., 0] / 255.0,
                             atol=1e-6)
