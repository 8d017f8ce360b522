"""Fashion-MNIST-format IDX files for tests: synthetic, or a subset of Debian's."""

import gzip
import os

import numpy as np

from simsiam_jax.data import idx_files


def write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim])
  header += b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_split(manual_dir, split: str, images, labels):
  names = idx_files.FILES[split]
  write_idx(os.path.join(manual_dir, names[0]), images)
  write_idx(os.path.join(manual_dir, names[1]), labels)


def write_random(manual_dir, n_train: int, n_test: int, seed: int = 0):
  """Random 28x28 images, labels i % 10; image i has id i in pixels (0,0), (0,1)."""
  rng = np.random.default_rng(seed)
  for split, n in (('train', n_train), ('test', n_test)):
    images = rng.integers(0, 256, (n, 28, 28))
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    write_split(manual_dir, split, images, np.arange(n) % 10)


def debian_available() -> bool:
  return not idx_files.missing_files(idx_files.DEBIAN_DIR)


def write_debian_subset(manual_dir, n_train: int, n_test: int):
  """The first n examples of each of Debian's splits (classes are balanced there)."""
  for split, n in (('train', n_train), ('test', n_test)):
    names = idx_files.FILES[split]
    images, labels = (idx_files.read_idx(
        os.path.join(idx_files.DEBIAN_DIR, f)) for f in names)
    write_split(manual_dir, split, images[:n], labels[:n])
