"""A fake ImageNet in the real manual layout, small enough for a test.

ILSVRC2012_img_train.tar holds one tar per synset (n01440764.tar, ...) of
JPEGs named SYNSET_N.JPEG; ILSVRC2012_img_val.tar holds
ILSVRC2012_val_0000000N.JPEG, whose labels TFDS takes from the list it ships
(the first N entries). Images vary in size, as ImageNet's do.
"""

import io
import os
import tarfile

import numpy as np
from PIL import Image

SYNSETS = ('n01440764', 'n01443537', 'n01484850')  # TFDS's first three
TRAIN_TAR, VAL_TAR = 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'


def _jpeg(rng, size) -> bytes:
  pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format='JPEG')
  return out.getvalue()


def _add(tar, name: str, data: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _size(rng):
  return tuple(int(v) for v in rng.integers(20, 41, 2))


def write(manual_dir, per_synset: int = 6, num_val: int = 8,
          train: bool = True, val: bool = True, seed: int = 0):
  """Writes the train and/or val tar into `manual_dir`."""
  rng = np.random.default_rng(seed)
  os.makedirs(manual_dir, exist_ok=True)
  if train:
    with tarfile.open(os.path.join(manual_dir, TRAIN_TAR), 'w') as outer:
      for synset in SYNSETS:
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode='w') as tar:
          for i in range(per_synset):
            _add(tar, f'{synset}_{i}.JPEG', _jpeg(rng, _size(rng)))
        _add(outer, f'{synset}.tar', inner.getvalue())
  if val:
    with tarfile.open(os.path.join(manual_dir, VAL_TAR), 'w') as tar:
      for i in range(1, num_val + 1):
        _add(tar, f'ILSVRC2012_val_{i:08d}.JPEG', _jpeg(rng, _size(rng)))
