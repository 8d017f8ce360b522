"""SimSiam's augmentations on the accelerator: the JAX twins of augment.py.

Same names, semantics and config fields as the tf.data ops in augment.py
(torchvision's): pure functions of (image, key) on one image [H, W, 3]
float32 in [0, 1]. `augment_batch` vmaps them with one key per example
inside the jitted train step, so they run sharded with the batch and the
host only ships uint8 pixels. `host_crop_views` is that in-step function
for crops made on the host (`data.augment_on='device'`); resident data sets
have theirs in resident.py. No TensorFlow here.

dm-pix supplies the hue rotation (its adjust_hue equals tf.image.adjust_hue
on [0, 1] images); brightness, contrast and saturation are written out
because dm-pix's differ from torchvision's (additive brightness, per-channel
contrast mean, HSV saturation).
"""

import math
from typing import Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections

from simsiam_jax import rngs
from simsiam_jax.data import spec

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_CROP_TRIES = 10


def crop_window(image_hw, key, scale: Sequence[float] = (0.2, 1.0),
                ratio: Sequence[float] = (3 / 4, 4 / 3)) -> jax.Array:
  """torchvision RandomResizedCrop.get_params: [offset_y, offset_x, h, w] float32.

  The same algorithm as augment.crop_window: up to 10 tries of area U(scale)
  and log-uniform aspect, the first that fits, else the centre-crop fallback.
  """
  height = jnp.asarray(image_hw[0], jnp.float32)
  width = jnp.asarray(image_hw[1], jnp.float32)
  k = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(k[0], (_CROP_TRIES,), minval=scale[0],
                                             maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(k[1], (_CROP_TRIES,),
                                      minval=math.log(ratio[0]),
                                      maxval=math.log(ratio[1])))
  w = jnp.round(jnp.sqrt(area * aspect))
  h = jnp.round(jnp.sqrt(area / aspect))
  ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
  first = jnp.argmax(ok)
  in_ratio = width / height
  fb_w = jnp.where(in_ratio > ratio[1], jnp.round(height * ratio[1]), width)
  fb_h = jnp.where(in_ratio < ratio[0], jnp.round(width / ratio[0]), height)
  any_ok = jnp.any(ok)
  crop_h = jnp.where(any_ok, h[first], fb_h)
  crop_w = jnp.where(any_ok, w[first], fb_w)
  oy = jnp.floor(jax.random.uniform(k[2]) * (height - crop_h + 1))
  ox = jnp.floor(jax.random.uniform(k[3]) * (width - crop_w + 1))
  oy = jnp.where(any_ok, oy, jnp.floor((height - crop_h) / 2))
  ox = jnp.where(any_ok, ox, jnp.floor((width - crop_w) / 2))
  return jnp.stack([oy, ox, crop_h, crop_w])


def crop_and_resize(image, window, size: int):
  """The window [oy, ox, h, w] resized to [size, size] (bilinear, antialiased).

  One `jax.image.scale_and_translate`, so the window may change per example
  under jit. Unlike cropping first, pixels just outside the window can enter
  its border pixels' interpolation.
  """
  oy, ox, h, w = window[0], window[1], window[2], window[3]
  scale = jnp.stack([size / h, size / w])
  translation = -jnp.stack([oy, ox]) * scale
  return jax.image.scale_and_translate(
      image, (size, size, image.shape[-1]), (0, 1), scale, translation,
      method='linear', antialias=True)


def random_resized_crop(image, key, size: int, scale=(0.2, 1.0),
                        ratio=(3 / 4, 4 / 3)):
  window = crop_window(image.shape[:2], key, scale, ratio)
  return crop_and_resize(image, window, size)


def random_flip(image, key, p: float = 0.5):
  return jnp.where(jax.random.uniform(key) < p, image[:, ::-1], image)


def to_grayscale(image):
  """[H, W, 3] -> [H, W, 1] luma (ITU-R 601-2, as torchvision).

  On a one-channel image [H, W, 1] (grey, standing for three equal
  channels) it is the same luma: the pixel times the weights' sum.
  """
  if image.shape[-1] == 1:
    return image * sum(GRAY_WEIGHTS)
  r, g, b = GRAY_WEIGHTS
  return (r * image[..., :1] + g * image[..., 1:2] + b * image[..., 2:3])


def _blend(image, other, factor):
  return jnp.clip(factor * image + (1 - factor) * other, 0.0, 1.0)


def adjust_brightness(image, factor):
  return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image, factor):
  return _blend(image, jnp.mean(to_grayscale(image)), factor)


def adjust_saturation(image, factor):
  return _blend(image, to_grayscale(image), factor)


def adjust_hue(image, delta):
  if image.shape[-1] == 1:  # a grey pixel has no hue
    return image
  return pix.adjust_hue(image, delta)


def color_jitter(image, key, brightness: float, contrast: float,
                 saturation: float, hue: float):
  """torchvision ColorJitter: the four adjustments in a random order."""
  k = jax.random.split(key, 5)
  u = lambda kk, lo, hi: jax.random.uniform(kk, minval=lo, maxval=hi)
  b = u(k[0], max(0.0, 1 - brightness), 1 + brightness)
  c = u(k[1], max(0.0, 1 - contrast), 1 + contrast)
  s = u(k[2], max(0.0, 1 - saturation), 1 + saturation)
  h = u(k[3], -hue, hue)
  order = jnp.argsort(jax.random.uniform(k[4], (4,)))
  ops = [lambda x: adjust_brightness(x, b), lambda x: adjust_contrast(x, c),
         lambda x: adjust_saturation(x, s), lambda x: adjust_hue(x, h)]
  for i in range(4):
    image = jax.lax.switch(order[i], ops, image)
  return image


def random_color_jitter(image, key, p: float, brightness: float,
                        contrast: float, saturation: float, hue: float):
  k = jax.random.split(key)
  jittered = color_jitter(image, k[1], brightness, contrast, saturation, hue)
  return jnp.where(jax.random.uniform(k[0]) < p, jittered, image)


def random_grayscale(image, key, p: float = 0.2):
  gray = jnp.broadcast_to(to_grayscale(image), image.shape)
  return jnp.where(jax.random.uniform(key) < p, gray, image)


def _blur_matrix(n: int, kernel, radius: int):
  """[n, n] matrix of a 1-D convolution with reflect padding folded in."""
  idx = jnp.abs(jnp.arange(n)[:, None] + jnp.arange(-radius, radius + 1)[None])
  idx = jnp.where(idx > n - 1, 2 * (n - 1) - idx, idx)
  return jnp.sum(jax.nn.one_hot(idx, n) * kernel[None, :, None], axis=1)


def gaussian_blur(image, sigma, kernel_size: int):
  """Separable Gaussian blur with reflect padding, as augment.gaussian_blur."""
  radius = kernel_size // 2
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * jnp.square(x / sigma))
  k /= jnp.sum(k)
  rows = _blur_matrix(image.shape[0], k, radius)
  cols = _blur_matrix(image.shape[1], k, radius)
  out = jnp.einsum('ij,jwc->iwc', rows, image)
  return jnp.einsum('kw,iwc->ikc', cols, out)


def random_gaussian_blur(image, key, p: float, sigma_min: float,
                         sigma_max: float, kernel_size: int):
  k = jax.random.split(key)
  sigma = jax.random.uniform(k[1], minval=sigma_min, maxval=sigma_max)
  blurred = gaussian_blur(image, sigma, kernel_size)
  return jnp.where(jax.random.uniform(k[0]) < p, blurred, image)


def normalize(image, mean, std):
  """(image - mean) / std per channel; one grey channel is repeated first."""
  if image.shape[-1] == 1 and len(mean) > 1:
    image = jnp.repeat(image, len(mean), axis=-1)
  return ((image - jnp.asarray(mean, jnp.float32)) /
          jnp.asarray(std, jnp.float32))


def augment_view(image, key, aug: ml_collections.ConfigDict):
  """After cropping: flip, jitter, grayscale, blur, normalise (augment.augment_view)."""
  k = jax.random.split(key, 4)
  image = random_flip(image, k[0], aug.flip_prob)
  if aug.jitter_prob > 0:
    image = random_color_jitter(image, k[1], aug.jitter_prob, aug.brightness,
                                aug.contrast, aug.saturation, aug.hue)
  if aug.grayscale_prob > 0:
    image = random_grayscale(image, k[2], aug.grayscale_prob)
  if aug.blur_prob > 0:
    image = random_gaussian_blur(image, k[3], aug.blur_prob,
                                 aug.blur_sigma_min, aug.blur_sigma_max,
                                 aug.blur_kernel_size)
  return normalize(image, aug.mean, aug.std)


def to_float(images):
  """uint8 pixels -> float32 in [0, 1]; float input is taken as already there."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def augment_batch(images, key, aug: ml_collections.ConfigDict,
                  crop_size: int = 0):
  """One augmented view of each image [B, H, W, C] (uint8 or float in [0, 1]).

  Grey images [B, H, W, 1] are augmented in one channel and repeated to
  the channels of `aug.mean` only at the end: the colour operations that
  change nothing on grey pixels (hue; saturation and grayscale up to the
  luma weights' sum, which is kept) then cost a third, and the result is
  the one the three-channel path gives.

  Args:
    images: a batch; uint8 is scaled to [0, 1], float taken as in [0, 1].
    key: this batch's key; example i uses fold_in(key, i).
    aug: `config.data.aug`.
    crop_size: > 0: a random-resized crop to this size first (for images
      that come uncropped, e.g. resident data sets); 0: already cropped.
  """
  images = to_float(images)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
      jnp.arange(images.shape[0]))

  def one(image, k):
    kc, ka = jax.random.split(k)
    if crop_size:
      image = random_resized_crop(image, kc, crop_size, aug.crop_scale,
                                  aug.crop_ratio)
    return augment_view(image, ka, aug)

  return jax.vmap(one)(images, keys)


def two_views(images, key, config: ml_collections.ConfigDict):
  """Two augmented views of each image, as the train step makes them.

  images [B, H, W, C] (uint8, or float in [0, 1]) -> (view1, view2), each
  [B, S, S, C'] float32: a random-resized crop to the run's view size, then
  `config.data.aug`'s recipe; view v draws from fold_in(key, v) (v = 0, 1).
  Jit it; under a mesh, shard `images` along B.
  """
  size = spec.view_size(config.data)
  return tuple(augment_batch(images, jax.random.fold_in(key, v),
                             config.data.aug, crop_size=size)
               for v in range(2))


def network_input(images, aug: ml_collections.ConfigDict):
  """Evaluation images as the network takes them; in jit.

  uint8 pixels (resident data sets ship them so) are scaled, repeated to the
  channels of `aug.mean` and normalised; float images come from the host
  pipeline already normalised and pass unchanged.
  """
  if images.dtype != jnp.uint8:
    return images
  return normalize(to_float(images), aug.mean, aug.std)


def host_crop_views(batch: dict, step, *, config: ml_collections.ConfigDict):
  """{'view1', 'view2': uint8 crops from the host} -> augmented float views; in jit.

  The in-step function of `data.augment_on='device'` with host data: the
  host crops and ships uint8, the rest of each view's recipe runs here.
  """
  key = jax.random.fold_in(rngs.key(config.seed, 'host_crops'), step)
  return {f'view{v}': augment_batch(batch[f'view{v}'],
                                    jax.random.fold_in(key, v),
                                    config.data.aug)
          for v in (1, 2)}
