"""An in-memory SYNTHETIC source: random images, no TensorFlow, no files.

For tests, benchmarks and machines without data. There are NUM_CLASSES
"classes", each a smooth random prototype image with its own colour; an
example is its class prototype plus smooth noise of its own. Training views
are an example with an independent random flip, shift and pixel noise. The
classes are easy to tell apart on purpose (the linear probe's tests need a
separable problem); features learnt on this data mean nothing.
"""

from typing import Iterator

import numpy as np

NUM_CLASSES = 10
SPLITS = ('train', 'test')
_NOISE = 0.2  # per-example noise next to prototypes of std about 1
_COLOUR = 2.0  # norm of each class's colour offset


def make_images(num_examples: int, image_size: int, channels: int,
                seed) -> np.ndarray:
  """[N, H, W, C] float32 images of low-frequency noise, mean 0, std about 1."""
  rng = np.random.default_rng(seed)
  coarse = max(2, image_size // 4)
  small = rng.standard_normal((num_examples, coarse, coarse, channels))
  reps = -(-image_size // coarse)
  big = small.repeat(reps, axis=1).repeat(reps, axis=2)
  return big[:, :image_size, :image_size].astype(np.float32)


def split_size(num_train_examples: int, split: str) -> int:
  """The train split has `num_train_examples`; the test split a quarter of that."""
  if split not in SPLITS:
    raise ValueError(f'The synthetic source has splits {SPLITS}, got {split!r}.')
  return num_train_examples if split == 'train' else max(num_train_examples // 4, 1)


def labelled_images(num_train_examples: int, image_size: int, channels: int,
                    seed: int, split: str = 'train'):
  """(images [N, H, W, C] float32, labels [N] int32) of one split."""
  n = split_size(num_train_examples, split)
  protos = make_images(NUM_CLASSES, image_size, channels, (seed, 0))
  # Class colours on a sphere: each one linearly separable from the others.
  colours = np.random.default_rng((seed, 1)).standard_normal(
      (NUM_CLASSES, 1, 1, channels)).astype(np.float32)
  colours *= _COLOUR / np.linalg.norm(colours, axis=-1, keepdims=True)
  labels = np.arange(n, dtype=np.int32) % NUM_CLASSES
  noise = make_images(n, image_size, channels, (seed, 2, SPLITS.index(split)))
  return protos[labels] + colours[labels] + _NOISE * noise, labels


def _view(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  flip = rng.random(len(images)) < 0.5
  out = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
  shift = rng.integers(-2, 3, size=2)
  out = np.roll(out, tuple(shift), axis=(1, 2))
  return out + 0.1 * rng.standard_normal(out.shape).astype(np.float32)


def train_batches(num_examples: int, image_size: int, channels: int,
                  local_batch_size: int, seed: int, process_index: int = 0,
                  start_step: int = 0, views: int = 2) -> Iterator[dict]:
  """Endless per-process training batches.

  Two views: {'view1', 'view2': [b, H, W, C] float32, 'label': [b]}; one
  view: {'image', 'label'}. Batch `step` of process `process_index` is a
  function of (seed, process, step) only, so a run can restart at any step.
  """
  images, labels = labelled_images(num_examples, image_size, channels, seed)
  step = start_step
  while True:
    rng = np.random.default_rng((seed, process_index, step))
    idx = rng.integers(0, len(images), size=local_batch_size)
    batch = images[idx]
    if views == 2:
      out = {'view1': _view(batch, rng), 'view2': _view(batch, rng)}
    else:
      out = {'image': _view(batch, rng)}
    out['label'] = labels[idx]
    yield out
    step += 1
