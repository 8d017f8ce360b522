"""Augmentation ops: eager and in tf.data, torchvision semantics, and their statistics."""

import math

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import augment  # pylint: disable=g-import-not-at-top,wrong-import-position

N_DRAWS = 2000


def _image(h=40, w=48, seed=0):
  return tf.constant(np.random.default_rng(seed).random((h, w, 3)), tf.float32)


def _seeds(n, base=0):
  return augment.split_seed(tf.constant([base, 7], tf.int64), n)


AUG = default.get_config().data.aug
OPS = {
    'random_resized_crop': lambda x, s: augment.random_resized_crop(x, s, 32),
    'random_flip': augment.random_flip,
    'random_color_jitter': lambda x, s: augment.random_color_jitter(
        x, s, 0.8, 0.4, 0.4, 0.4, 0.1),
    'random_grayscale': augment.random_grayscale,
    'random_gaussian_blur': lambda x, s: augment.random_gaussian_blur(
        x, s, 1.0, 0.1, 2.0, 9),
    'augment_view': lambda x, s: augment.augment_view(x, s, AUG),
}


@pytest.mark.parametrize('name', sorted(OPS))
def test_op_eager_and_in_tf_data(name):
  op = OPS[name]
  image = _image()
  seed = _seeds(1)[0]
  eager = op(image, seed)
  ds = tf.data.Dataset.from_tensors((image, seed)).map(op)
  in_graph = next(iter(ds))
  np.testing.assert_allclose(eager, in_graph, rtol=1e-5, atol=1e-6)
  assert eager.dtype == tf.float32
  expected_hw = (32, 32) if name == 'random_resized_crop' else (40, 48)
  assert tuple(eager.shape) == (*expected_hw, 3)
  if name != 'augment_view':  # normalised output is not in [0, 1]
    assert float(tf.reduce_min(eager)) >= 0 and float(tf.reduce_max(eager)) <= 1


def test_same_seed_same_output_other_seed_differs():
  image = _image()
  s = _seeds(2)
  a = augment.augment_view(augment.random_resized_crop(image, s[0], 32), s[1], AUG)
  b = augment.augment_view(augment.random_resized_crop(image, s[0], 32), s[1], AUG)
  np.testing.assert_array_equal(a, b)
  s2 = _seeds(2, base=1)
  c = augment.augment_view(augment.random_resized_crop(image, s2[0], 32), s2[1], AUG)
  assert float(tf.reduce_max(tf.abs(a - c))) > 0.1


def _torchvision_crop_params(rng, height, width, scale, ratio):
  """NumPy transcription of torchvision's RandomResizedCrop.get_params."""
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    return int(round(width / min(ratio))), width
  if in_ratio > max(ratio):
    return height, int(round(height * max(ratio)))
  return height, width


@pytest.mark.parametrize('hw', [(224, 224), (100, 300)])
def test_crop_distribution_matches_torchvision(hw):
  h, w = hw
  fn = tf.function(lambda s: augment.crop_window(tf.constant(hw), s))
  windows = np.stack([fn(s).numpy() for s in _seeds(N_DRAWS)])
  oy, ox, ch, cw = windows.T
  assert np.all(oy >= 0) and np.all(ox >= 0)
  assert np.all(oy + ch <= h) and np.all(ox + cw <= w)
  frac = ch * cw / (h * w)
  rng = np.random.default_rng(0)
  ref = np.array([np.prod(_torchvision_crop_params(rng, h, w, (0.2, 1.0),
                                                   (3 / 4, 4 / 3)))
                  for _ in range(20000)]) / (h * w)
  assert frac.min() >= 0.2 - 0.02 and frac.max() <= 1.0
  # Mean area: standard error of 2000 draws is about 0.005.
  assert abs(frac.mean() - ref.mean()) < 0.02, (frac.mean(), ref.mean())
  log_aspect = np.log(cw / ch)
  assert np.all(np.abs(log_aspect) <= math.log(4 / 3) + 0.05)


def test_crop_fallback_is_torchvision_centre_crop():
  """Scale above 1 never fits: the fallback centre crop, clamped to the ratio."""
  window = augment.crop_window(tf.constant([100, 300]), _seeds(1)[0],
                               scale=(2.0, 3.0))
  assert window.numpy().tolist() == [0, 83, 100, 133]


def _frequency(op, predicate):
  image = _image(16, 16)
  fn = tf.function(lambda s: op(image, s))
  hits = [predicate(image.numpy(), fn(s).numpy()) for s in _seeds(N_DRAWS)]
  return float(np.mean(hits))


# 3 standard errors of a 2000-draw frequency near 0.5 is about 0.034.
TOL = 0.035


def test_flip_frequency():
  f = _frequency(augment.random_flip,
                 lambda x, y: np.array_equal(y, x[:, ::-1]))
  assert abs(f - 0.5) < TOL


def test_grayscale_frequency():
  f = _frequency(augment.random_grayscale,
                 lambda x, y: np.allclose(y[..., 0], y[..., 1]))
  assert abs(f - 0.2) < TOL


def test_jitter_frequency():
  op = lambda x, s: augment.random_color_jitter(x, s, 0.8, 0.4, 0.4, 0.4, 0.1)
  f = _frequency(op, lambda x, y: not np.allclose(x, y))
  assert abs(f - 0.8) < TOL


def test_blur_frequency():
  # sigma >= 1: a blur with sigma near 0.1 leaves the image as it is and
  # could not be told from no blur.
  op = lambda x, s: augment.random_gaussian_blur(x, s, 0.5, 1.0, 2.0, 9)
  f = _frequency(op, lambda x, y: not np.allclose(x, y))
  assert abs(f - 0.5) < TOL


def test_brightness_is_multiplicative():
  image = _image()
  np.testing.assert_allclose(augment.adjust_brightness(image, 0.5),
                             image.numpy() * 0.5, rtol=1e-6)


def test_contrast_and_saturation_blend_as_torchvision():
  image = _image().numpy()
  gray = image @ np.array(augment.GRAY_WEIGHTS)
  want_c = np.clip(1.3 * image + (1 - 1.3) * gray.mean(), 0, 1)
  np.testing.assert_allclose(augment.adjust_contrast(image, 1.3), want_c,
                             rtol=1e-5, atol=1e-6)
  want_s = np.clip(0.6 * image + 0.4 * gray[..., None], 0, 1)
  np.testing.assert_allclose(augment.adjust_saturation(image, 0.6), want_s,
                             rtol=1e-5, atol=1e-6)


def test_hue_shift_of_pure_red():
  red = tf.constant([[[1.0, 0.0, 0.0]]])
  # A third of a turn maps red to green.
  np.testing.assert_allclose(augment.adjust_hue(red, 1 / 3), [[[0, 1, 0]]],
                             atol=1e-5)


def test_blur_preserves_constant_and_smooths_impulse():
  const = tf.fill([21, 21, 3], 0.5)
  np.testing.assert_allclose(augment.gaussian_blur(const, 1.0, 9), 0.5,
                             atol=1e-6)
  impulse = np.zeros((21, 21, 3), np.float32)
  impulse[10, 10] = 1.0
  out = augment.gaussian_blur(tf.constant(impulse), 1.0, 9).numpy()
  x = np.arange(-4, 5)
  k = np.exp(-0.5 * x**2)
  k /= k.sum()
  np.testing.assert_allclose(out[6:15, 6:15, 0], np.outer(k, k), atol=1e-6)
