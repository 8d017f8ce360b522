"""Augmentation throughput: on the device (JAX, in jit) vs on the host (tf.data).

Both make ONE augmented view per image from uint8 images already in memory
(no decoding): random-resized crop to the output size, flip, colour jitter
(p 0.8, random order), grayscale (p 0.2), Gaussian blur (p 0.5, ImageNet
recipe only), normalise. Two recipes:

  cifar:    32x32 sources -> 32 px, no blur (the CIFAR / Fashion-MNIST recipe)
  imagenet: 256x256 sources -> 224 px, blur kernel 23

Device: `device_augment.augment_batch` jitted on the default JAX backend
(here the CPU, all its cores as one device). Host: the tf.data ops
(`augment.random_resized_crop` + `augment.augment_view`) in a tf.data map
with AUTOTUNE parallelism over all cores. Images/s, best of 3 timed passes.

  PYTHONPATH=. .venv/bin/python benchmarks/augment_throughput.py [--recipes=cifar,imagenet]
"""

import argparse
import json
import time

import jax
import numpy as np

from configs import default
from simsiam_jax.data import device_augment

RECIPES = {'cifar': (32, 32, 0.0, 512), 'imagenet': (256, 224, 0.5, 64)}


def _aug(blur_prob):
  aug = default.get_config().data.aug
  aug.blur_prob = blur_prob
  return aug


def _images(n, size, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (n, size // 8, size // 8, 3))
  return np.kron(coarse, np.ones((1, 8, 8, 1))).astype(np.uint8)


def _best(fn, passes=3):
  times = []
  for _ in range(passes):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def device_rate(src, out, blur, batch, steps=4):
  aug = _aug(blur)
  images = jax.device_put(_images(batch, src))
  fn = jax.jit(lambda x, k: device_augment.augment_batch(x, k, aug,
                                                         crop_size=out))
  fn(images, jax.random.key(0)).block_until_ready()  # compile

  def run():
    for s in range(steps):
      fn(images, jax.random.key(s)).block_until_ready()
  return steps * batch / _best(run)


def host_rate(src, out, blur, batch, steps=4):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from simsiam_jax.data import augment  # pylint: disable=g-import-not-at-top
  aug = _aug(blur)
  images = _images(batch, src)

  def one(index, image):
    seed = tf.stack([tf.cast(index, tf.int64), tf.constant(0, tf.int64)])
    s = augment.split_seed(seed, 2)
    x = tf.cast(image, tf.float32) / 255.0
    x = augment.random_resized_crop(x, s[0], out, aug.crop_scale,
                                    aug.crop_ratio)
    return augment.augment_view(x, s[1], aug)

  ds = (tf.data.Dataset.from_tensor_slices(images).repeat().enumerate()
        .map(one, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
        .prefetch(tf.data.AUTOTUNE))
  it = iter(ds)
  next(it)  # trace and warm up

  def run():
    for _ in range(steps):
      next(it)
  return steps * batch / _best(run)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--recipes', default='cifar,imagenet')
  args = p.parse_args()
  rows = []
  for name in args.recipes.split(','):
    src, out, blur, batch = RECIPES[name]
    row = {'recipe': name, 'source_px': src, 'out_px': out, 'batch': batch,
           'device': str(jax.devices()[0].platform),
           'device_img_per_s': round(device_rate(src, out, blur, batch), 1),
           'host_tfdata_img_per_s': round(host_rate(src, out, blur, batch), 1)}
    rows.append(row)
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
