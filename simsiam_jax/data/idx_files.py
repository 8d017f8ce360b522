"""Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist), read without TensorFlow."""

import functools
import gzip
import os

import numpy as np

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
           'Shirt', 'Sneaker', 'Bag', 'Ankle boot')


def read_idx(path: str) -> np.ndarray:
  """Reads a gzipped IDX file (uint8 data) into an array of its shape."""
  with gzip.open(path, 'rb') as f:
    data = f.read()
  magic = int.from_bytes(data[:4], 'big')
  if magic >> 8 != 0x08:
    raise ValueError(f'{path} is not a uint8 IDX file (magic {magic:#x}).')
  ndim = magic & 0xFF
  shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], 'big')
           for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def missing_files(directory: str) -> list[str]:
  return [f for pair in FILES.values() for f in pair
          if not os.path.exists(os.path.join(directory, f))]


@functools.lru_cache(maxsize=4)
def read_split(directory: str, split: str):
  """(images [N, 28, 28, 1] uint8, labels [N] int32) of 'train' or 'test'.

  Read once per process (every kNN evaluation reads both splits again);
  the arrays are read-only.
  """
  images, labels = (read_idx(os.path.join(directory, f)) for f in FILES[split])
  return images[..., None], labels.astype(np.int32)
