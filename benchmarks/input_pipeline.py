"""Input pipeline throughput per host core: our tf.data recipe vs torchvision's.

Two views per image at 224 px from synthetic JPEGs of ImageNet-like size
(about 500x375, quality 90), on one core:

  (a) decode + two random-resized crops + flip;
  (b) the full SimSiam recipe: (a) + colour jitter (p 0.8) + grayscale (p 0.2)
      + Gaussian blur (p 0.5) + normalise.

Ours: tf.data with one private thread and one intra-op thread, using the
fused decode-and-crop. Reference: the official code's torchvision transforms
(PIL decode, RandomResizedCrop, ColorJitter, RandomGrayscale, PIL
GaussianBlur, ToTensor, Normalize) in one process. torch lives in its own
virtual environment (see BENCHMARKS.md):

  .venv/bin/python benchmarks/input_pipeline.py --torch_python=.venv-torch/bin/python
"""

import argparse
import io
import json
import os
import subprocess
import sys
import time

import numpy as np

NUM_JPEGS = 64


def make_jpegs(n=NUM_JPEGS, seed=0):
  """JPEG bytes of smooth random colour images, 500x375 or 375x500."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    h, w = (375, 500) if i % 2 else (500, 375)
    small = rng.random((h // 25, w // 25, 3))
    img = np.kron(small, np.ones((25, 25, 1)))
    img = (255 * (0.7 * img + 0.3 * rng.random((h, w, 3)))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=90)
    out.append(buf.getvalue())
  return out


def bench_tf(full: bool, num_images: int, threads: int) -> float:
  """Images/s (two views each) of our tf.data recipe."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  from simsiam_jax.data import augment  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  aug = imagenet.get_config().data.aug
  jpegs = tf.constant(make_jpegs())

  def two_views(index, jpeg):
    seeds = augment.split_seed(tf.stack([tf.constant(0, tf.int64), index]), 4)
    views = []
    for v in range(2):
      shape = tf.image.extract_jpeg_shape(jpeg)
      w = augment.crop_window(shape[:2], seeds[2 * v], aug.crop_scale,
                              aug.crop_ratio)
      img = tf.image.decode_and_crop_jpeg(jpeg, w, channels=3)
      img = augment.resize(tf.cast(img, tf.float32) / 255.0, 224)
      if full:
        img = augment.augment_view(img, seeds[2 * v + 1], aug)
      else:
        img = augment.random_flip(img, seeds[2 * v + 1])
      views.append(img)
    return views

  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
  ds = ds.map(two_views, num_parallel_calls=threads, deterministic=True)
  ds = ds.batch(32)
  opts = tf.data.Options()
  opts.threading.private_threadpool_size = threads
  opts.threading.max_intra_op_parallelism = 1
  ds = ds.with_options(opts).prefetch(2)
  it = iter(ds)
  for _ in range(3):  # warm-up: tracing and thread start
    next(it)
  t = time.perf_counter()
  for _ in range(num_images // 32):
    next(it)
  return (num_images // 32) * 32 / (time.perf_counter() - t)


def bench_torch(full: bool, num_images: int) -> float:
  """Images/s (two views each) of the official code's torchvision recipe."""
  import torch  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageFilter  # pylint: disable=g-import-not-at-top
  import random  # pylint: disable=g-import-not-at-top
  from torchvision import transforms as T  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)

  class GaussianBlur:  # as in the official SimSiam code
    def __call__(self, x):
      return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))

  normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
  if full:
    tf_ = T.Compose([
        T.RandomResizedCrop(224, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2), T.RandomApply([GaussianBlur()], p=0.5),
        T.RandomHorizontalFlip(), T.ToTensor(), normalize])
  else:
    tf_ = T.Compose([T.RandomResizedCrop(224, scale=(0.2, 1.0)),
                     T.RandomHorizontalFlip(), T.ToTensor()])
  jpegs = make_jpegs()

  def one(i):
    img = Image.open(io.BytesIO(jpegs[i % len(jpegs)])).convert('RGB')
    return tf_(img), tf_(img)

  for i in range(8):
    one(i)
  t = time.perf_counter()
  for i in range(num_images):
    one(i)
  return num_images / (time.perf_counter() - t)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--impl', default='both', choices=['tf', 'torch', 'both'])
  p.add_argument('--num_images', type=int, default=512)
  p.add_argument('--torch_python', default='',
                 help='python of a venv with torch+torchvision, if not this one')
  args = p.parse_args()
  rows = {}
  if args.impl in ('tf', 'both'):
    for full in (False, True):
      rows[f'ours_tfdata_{"full" if full else "crop_flip"}'] = bench_tf(
          full, args.num_images, threads=1)
  if args.impl in ('torch', 'both'):
    if args.torch_python:
      out = subprocess.run(
          [args.torch_python, __file__, '--impl=torch',
           f'--num_images={args.num_images}'], capture_output=True, text=True,
          check=True).stdout
      rows.update(json.loads(out.strip().splitlines()[-1]))
    else:
      for full in (False, True):
        rows[f'torchvision_{"full" if full else "crop_flip"}'] = bench_torch(
            full, args.num_images)
  print(json.dumps({k: round(v, 1) for k, v in rows.items()}))


if __name__ == '__main__':
  main()
