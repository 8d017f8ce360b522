"""Small data sets resident on the devices, augmented inside the train step.

With `config.data.resident=True` (and `augment_on='device'`) the uint8
images of the train split live on the devices, sharded along N: each device
holds N/D of them. Every step, inside the jitted train step, each device
draws its part of the batch from its own shard (a permutation per epoch,
drawn on the device from (seed, epoch, device)), then crops and augments it
there (device_augment). The host ships nothing per step.

Reading needs no TensorFlow: the synthetic source is made in memory,
Fashion-MNIST is read from Debian's IDX files, and other TFDS data sets from
an `.npz` cache that is written once where TensorFlow is present.

A run's batches depend on (seed, step) and on the device count (each device
samples its own shard), unlike the host pipeline's.
"""

import os

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from simsiam_jax import parallel
from simsiam_jax import rngs
from simsiam_jax.data import device_augment
from simsiam_jax.data import errors
from simsiam_jax.data import idx_files
from simsiam_jax.data import spec
from simsiam_jax.data import synthetic


def _cache_path(dc, split: str) -> str:
  root = dc.data_dir or os.path.expanduser('~/tensorflow_datasets')
  return os.path.join(root, 'simsiam_jax_npz', f'{dc.dataset}_{split}.npz')


def _synthetic_uint8(dc, seed: int, split: str):
  images, labels = synthetic.labelled_images(
      dc.synthetic_num_examples, dc.image_size, dc.channels, seed, split)
  # The floats are about N(0, 2): map [-4, 4] to [0, 255].
  pixels = np.clip((images + 4.0) * (255.0 / 8.0), 0, 255).round()
  return pixels.astype(np.uint8), labels


def load_uint8(config: ml_collections.ConfigDict, split: str):
  """(images [N, H, W, C] uint8, labels [N] int32) of a split, without TensorFlow."""
  dc = config.data
  if dc.dataset == 'synthetic':
    return _synthetic_uint8(dc, config.seed, split)
  if dc.dataset == 'fashion_mnist_debian':
    directory = dc.manual_dir or idx_files.DEBIAN_DIR
    if idx_files.missing_files(directory):
      raise errors.ResidentDataError(
          f'Fashion-MNIST files {idx_files.missing_files(directory)} not found '
          f'in {directory}: run `apt-get install -y dataset-fashion-mnist` or '
          'set --config.data.manual_dir.')
    return idx_files.read_split(directory, split)
  path = _cache_path(dc, split)
  if not os.path.exists(path):
    _write_npz_cache(config, split, path)
  with np.load(path) as f:
    return f['image'], f['label'].astype(np.int32)


def _write_npz_cache(config, split: str, path: str):
  """Reads a prepared TFDS split once (needs TensorFlow) into an .npz file."""
  try:
    from simsiam_jax.data import tfds_pipeline  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.ResidentDataError(
        f'{path} does not exist and TensorFlow is not installed to read '
        f'{config.data.dataset!r} from TFDS: write it once on a machine with '
        'TensorFlow (any run with data.resident=True does), then copy it.'
    ) from e
  builder = tfds_pipeline.get_builder(config.data)
  shape = tuple(builder.info.features['image'].shape)
  if None in shape:
    # TFDS would pad every image to the largest one with zeros.
    raise errors.ResidentDataError(
        f'data.resident needs images of one size; {builder.name} has images '
        f'of shape {shape} (None: varies): set --config.data.resident=False.')
  data = tfds_pipeline.tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, image=data['image'], label=data['label'])
  os.replace(tmp, path)


class ResidentTrainSet:
  """The train split's uint8 images, sharded along N on the mesh."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    dc = config.data
    images, _ = load_uint8(config, dc.train_split)
    n_dev = mesh.devices.size
    n = (len(images) // n_dev) * n_dev  # an equal shard per device
    images = np.ascontiguousarray(images[:n])
    self.num_examples = n
    self.image_shape = spec.image_shape(dc)
    sharding = parallel.data_sharded(mesh)
    self.images = jax.make_array_from_callback(images.shape, sharding,
                                               lambda idx: images[idx])
    logging.info('Resident train split: %d images %s uint8, %.1f MB per '
                 'device.', n, images.shape[1:], images.nbytes / n_dev / 2**20)

  def batches(self):
    """What the train iterator yields every step: the resident array itself."""
    while True:
      yield {'images': self.images}


_FEISTEL_ROUNDS = 4


def _mix(x, key):
  """A 32-bit integer hash of x (murmur3's finaliser) keyed by `key`."""
  x = x ^ key
  x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
  x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def permuted_index(i, n: int, key):
  """Position i of a random permutation of range(n), without building it.

  A keyed Feistel network is a bijection on [0, 2^bits); walking the cycle
  until the value falls below n makes it one on [0, n). Each step costs a
  few integer operations per drawn index, where `jax.random.permutation`
  sorts all n keys (46 ms for n = 60,000 on a CPU core, every step).
  """
  half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
  mask = jnp.uint32((1 << half) - 1)
  round_keys = jax.random.bits(key, (_FEISTEL_ROUNDS,), jnp.uint32)

  def feistel(x):
    left, right = x >> half, x & mask
    for r in range(_FEISTEL_ROUNDS):
      left, right = right, left ^ (_mix(right, round_keys[r]) & mask)
    return (left << half) | right

  x = feistel(jnp.asarray(i, jnp.uint32))
  x = jax.lax.while_loop(lambda x: jnp.any(x >= n),
                         lambda x: jnp.where(x >= n, feistel(x), x), x)
  return x.astype(jnp.int32)


def two_views(batch: dict, step, *, config: ml_collections.ConfigDict, mesh,
              steps_per_epoch: int):
  """{'images': resident [N, ...] uint8} -> {'view1', 'view2'} sharded; in jit.

  Each device takes its global_batch / D examples of this step from its own
  shard's permutation for this epoch, then crops and augments each twice.
  """
  n_dev = mesh.devices.size
  b = config.batch_size // n_dev
  perm_root = rngs.key(config.seed, 'resident_order')
  aug_root = rngs.key(config.seed, 'device_augment')

  def per_device(images, step):
    d = jax.lax.axis_index(parallel.DATA_AXIS)
    epoch, i = step // steps_per_epoch, step % steps_per_epoch
    perm_key = jax.random.fold_in(jax.random.fold_in(perm_root, epoch), d)
    x = images[permuted_index(i * b + jnp.arange(b), images.shape[0],
                              perm_key)]
    key = jax.random.fold_in(jax.random.fold_in(aug_root, step), d)
    return device_augment.two_views(x, key, config)

  v1, v2 = jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(parallel.DATA_AXIS), P()),
      out_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
      check_vma=False)(batch['images'], step)
  return {'view1': v1, 'view2': v2}
