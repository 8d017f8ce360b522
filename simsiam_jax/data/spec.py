"""What `config.data` means, in one place, without importing a framework.

Every data module reads the view size, the network's input shape and the
checked augmentation settings from here.
"""

import ml_collections

from simsiam_jax.data import errors

AUGMENT_ON = ('host', 'device')


def image_shape(dc: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """The network's input shape HWC (grey images are repeated to `channels`)."""
  return (dc.image_size, dc.image_size, dc.channels)


def view_size(dc: ml_collections.ConfigDict) -> int:
  """Side of a training view: `aug.crop_size`, or `image_size` when 0."""
  return dc.aug.crop_size or dc.image_size


def check(dc: ml_collections.ConfigDict):
  """Raises DataConfigError, naming the fix, for settings no source can run."""
  if dc.augment_on not in AUGMENT_ON:
    raise errors.DataConfigError(
        f'data.augment_on must be one of {AUGMENT_ON}, got {dc.augment_on!r}.')
  if dc.resident and dc.augment_on != 'device':
    raise errors.DataConfigError(
        'data.resident=True augments inside the train step: pass '
        '--config.data.augment_on=device.')
  if dc.aug.crop_size < 0:
    raise errors.DataConfigError(
        f'data.aug.crop_size must be >= 0 (0: data.image_size), got '
        f'{dc.aug.crop_size}.')
  if len(dc.aug.mean) != dc.channels or len(dc.aug.std) != dc.channels:
    raise errors.DataConfigError(
        f'data.aug.mean and data.aug.std need one value per channel '
        f'(data.channels={dc.channels}), got {len(dc.aug.mean)} and '
        f'{len(dc.aug.std)}.')
