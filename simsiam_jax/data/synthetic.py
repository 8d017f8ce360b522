"""An in-memory SYNTHETIC source: random images, no TensorFlow, no files.

For tests, benchmarks and machines without data. Each "image" is smooth
random noise; its two views are that image with an independent random flip,
shift and pixel noise. Features learnt on it mean nothing.
"""

from typing import Iterator

import numpy as np


def make_images(num_examples: int, image_size: int, channels: int,
                seed: int) -> np.ndarray:
  """[N, H, W, C] float32 images of low-frequency noise, mean 0, std about 1."""
  rng = np.random.default_rng(seed)
  coarse = max(2, image_size // 4)
  small = rng.standard_normal((num_examples, coarse, coarse, channels))
  reps = -(-image_size // coarse)
  big = small.repeat(reps, axis=1).repeat(reps, axis=2)
  return big[:, :image_size, :image_size].astype(np.float32)


def _view(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  flip = rng.random(len(images)) < 0.5
  out = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
  shift = rng.integers(-2, 3, size=2)
  out = np.roll(out, tuple(shift), axis=(1, 2))
  return out + 0.1 * rng.standard_normal(out.shape).astype(np.float32)


def two_view_batches(num_examples: int, image_size: int, channels: int,
                     local_batch_size: int, seed: int, process_index: int = 0,
                     start_step: int = 0) -> Iterator[dict]:
  """Endless per-process batches {'view1', 'view2': [b, H, W, C] float32, 'label'}.

  Batch `step` of process `process_index` is a function of (seed, process,
  step) only, so a run can restart at any step.
  """
  images = make_images(num_examples, image_size, channels, seed)
  step = start_step
  while True:
    rng = np.random.default_rng((seed, process_index, step))
    idx = rng.integers(0, num_examples, size=local_batch_size)
    batch = images[idx]
    yield {'view1': _view(batch, rng), 'view2': _view(batch, rng),
           'label': (idx % 10).astype(np.int32)}
    step += 1
