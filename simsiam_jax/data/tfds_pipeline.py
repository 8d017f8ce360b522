"""tf.data over TFDS: two augmented views per image, sharded per process.

The only module that imports TensorFlow for training; `sources` imports it
only for TFDS datasets. Train batches are {'view1', 'view2': [b, S, S, 3]
float32 normalised, 'label': [b]} with b the per-process batch; evaluation
batches are {'image', 'label', 'mask'}. Training can be restricted to a
subset of the split named by example index (the classifier's label fraction).
"""

import os
import socket

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simsiam_jax.data import augment
from simsiam_jax.data import errors
from simsiam_jax.data import fashion_mnist
from simsiam_jax.data import idx_files
from simsiam_jax.data import prepare
from simsiam_jax.data import spec

# TF must not grab the accelerators JAX uses.
tf.config.set_visible_devices([], 'GPU')

OURS = {'fashion_mnist_debian': fashion_mnist.FashionMnistDebian}


def _online(host: str = 'storage.googleapis.com', timeout: float = 3.0) -> bool:
  try:
    socket.create_connection((host, 443), timeout).close()
    return True
  except OSError:
    return False


def get_builder(dc: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder of `dc.dataset`, prepared, or a fast and clear error.

  Our offline builders prepare themselves from local files once. Datasets
  with manual downloads (imagenet2012) prepare from `dc.manual_dir`, after
  their files are checked. Others download only if `dc.allow_download` and
  the network answers within seconds; TFDS would otherwise retry for
  minutes. One process prepares, the others wait (prepare.py); a prepared
  dataset must have the config's splits.
  """
  data_dir = dc.data_dir or None

  def make_builder():
    if dc.dataset in OURS:
      return OURS[dc.dataset](data_dir=data_dir)
    try:
      return tfds.builder(dc.dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise errors.DataConfigError(
          f'Unknown dataset {dc.dataset!r}: not a TFDS name nor one of ours '
          f'({sorted(OURS)}).') from e

  return prepare.prepare_once(make_builder,
                              lambda builder: _prepare(builder, dc), dc)


def _prepare(builder, dc):
  name = builder.name
  where = builder.data_dir
  manual_dir = dc.manual_dir
  if isinstance(builder, fashion_mnist.FashionMnistDebian):
    manual_dir = manual_dir or idx_files.DEBIAN_DIR
    missing = idx_files.missing_files(manual_dir)
    if missing:
      raise errors.DatasetNotReady(
          f'{name}: files {missing} are not in {manual_dir}. Install them with '
          '`apt-get update && apt-get install -y dataset-fashion-mnist` (or '
          'run `make data`), or set --config.data.manual_dir to a folder '
          'holding them.')
  elif builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    if not manual_dir or not os.path.isdir(manual_dir):
      raise errors.DatasetNotReady(
          f'{name} needs a manual download: set --config.data.manual_dir to '
          f'the folder with its files. TFDS says: '
          f'{" ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}')
    prepare.check_manual_files(name, manual_dir)
  elif not dc.allow_download or not _online():
    raise errors.DatasetNotReady(
        f'{name} is not prepared in {where} and cannot be downloaded here '
        f'(allow_download={dc.allow_download}, network unreachable or off). '
        f'On a machine with internet run `tfds build {name} --data_dir=DIR`, '
        'copy DIR here and pass --config.data.data_dir=DIR.')
  logging.info('Preparing %s once in %s ...', name, where)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir or None))


def num_examples(builder, split: str) -> int:
  return builder.info.splits[split].num_examples


def _decoders(dc):
  # ImageNet: keep the JPEG bytes so the crop is decoded alone (fused op).
  return {'image': tfds.decode.SkipDecoding()} if dc.decode_jpeg_crop else None


def _decode(example, builder):
  """Image as float32 [H, W, 3] in [0, 1]; grayscale is repeated to 3 channels."""
  image = augment.to_unit_float(example['image'])
  if builder.info.features['image'].shape[-1] == 1:
    image = tf.image.grayscale_to_rgb(image)
  return image


def _crop_train(example, seed, builder, dc):
  """Random-resized crop of one view; ImageNet decodes only the crop window."""
  aug = dc.aug
  size = spec.view_size(dc)
  if dc.decode_jpeg_crop:
    jpeg = example['image']
    shape = tf.image.extract_jpeg_shape(jpeg)
    w = augment.crop_window(shape[:2], seed, aug.crop_scale, aug.crop_ratio)
    image = augment.to_unit_float(
        tf.image.decode_and_crop_jpeg(jpeg, w, channels=3))
    return augment.resize(image, size)
  return augment.random_resized_crop(_decode(example, builder), seed,
                                     size, aug.crop_scale,
                                     aug.crop_ratio)


def _in_index_order(builder, split: str, decoders) -> tf.data.Dataset:
  """`split` in the one fixed order that defines example indices (files unshuffled)."""
  return builder.as_dataset(split=split, shuffle_files=False,
                            decoders=decoders,
                            read_config=tfds.ReadConfig(skip_prefetch=True))


def split_labels(builder, split: str) -> np.ndarray:
  """Labels [N] of `split` by example index: the order of an unshuffled read.

  Only the label feature is decoded; the records are still read once (for
  ImageNet, one pass over the split's files).
  """
  ds = _in_index_order(builder, split,
                       tfds.decode.PartialDecoding({'label': True}))
  ds = ds.map(lambda ex: ex['label']).batch(65536)
  parts = list(tfds.as_numpy(ds))
  return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _subset_source(dc, builder, indices: np.ndarray) -> tf.data.Dataset:
  """The examples of the train split whose index is in `indices`, in index order.

  Indices count examples in the order `split_labels` reads them (files
  unshuffled), so the subset is the same whatever reads it.
  """
  n = num_examples(builder, dc.train_split)
  indices = np.asarray(indices, np.int64)
  if not indices.size or indices.min() < 0 or indices.max() >= n:
    raise ValueError(f'A train subset needs indices in 0..{n - 1} (split '
                     f'{dc.train_split!r}); got {indices.size} indices.')
  keep = np.zeros(n, bool)
  keep[indices] = True
  keep = tf.constant(keep)
  ds = _in_index_order(builder, dc.train_split, _decoders(dc))
  ds = ds.enumerate().filter(lambda i, _: tf.gather(keep, i))
  return ds.map(lambda _, example: example)


def train_dataset(dc: ml_collections.ConfigDict, builder, seed: int,
                  local_batch_size: int, process_index: int,
                  process_count: int, start_step: int = 0,
                  views: int = 2,
                  indices: np.ndarray | None = None) -> tf.data.Dataset:
  """Endless per-process batches of two augmented views (or one: `views=1`).

  Two views: {'view1', 'view2', 'label'}; one view (linear probe,
  fine-tuning): {'image', 'label'}.

  Deterministic: the views of the n-th example of process p are a function
  of (seed, p, n) only, so a run restarts at `start_step` by skipping.

  Args:
    indices: None: the whole split, shared between processes by
      `tfds.split_for_jax_process`. Otherwise THIS process's examples, as
      indices into the train split (`split_labels`' order): the caller
      selects a subset and shares it out. Every epoch then filters the split
      down to them, so set `dc.cache` (the subset is then read once).
  """
  if indices is None:
    split = tfds.split_for_jax_process(
        dc.train_split, process_index=process_index,
        process_count=process_count)
    read_config = tfds.ReadConfig(shuffle_seed=seed, skip_prefetch=True)
    ds = builder.as_dataset(split=split, shuffle_files=True,
                            decoders=_decoders(dc), read_config=read_config)
  else:
    ds = _subset_source(dc, builder, indices)
    if not dc.cache:
      logging.warning('Training on %d examples of %s without data.cache: '
                      'every epoch reads the whole split to find them.',
                      len(indices), dc.train_split)
  if dc.cache:
    ds = ds.cache()
  ds = ds.repeat()
  ds = ds.shuffle(dc.shuffle_buffer, seed=seed)
  ds = ds.enumerate()
  if start_step:
    # Resume: drop whole batches before the (costly) augmentation. The
    # enumerate index stays global, so the views are those of an unbroken run.
    ds = ds.skip(start_step * local_batch_size)
  base = tf.constant([seed, process_index], tf.int64)

  names = ('view1', 'view2') if views == 2 else ('image',)

  def augmented_views(index, example):
    s = augment.split_seed(tf.random.experimental.stateless_fold_in(base, index), 4)
    out = {}
    for v, name in enumerate(names):
      crop = _crop_train(example, s[2 * v], builder, dc)
      if dc.augment_on == 'device':  # the train step does the rest
        out[name] = augment.to_uint8(crop)
      else:
        out[name] = augment.augment_view(crop, s[2 * v + 1], dc.aug)
    out['label'] = tf.cast(example['label'], tf.int32)
    return out

  ds = ds.map(augmented_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.threading.private_threadpool_size = dc.num_workers or 0
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_image(example, builder, dc):
  """Evaluation view: resize 256 + centre crop 224 at ImageNet size, else as is."""
  if dc.decode_jpeg_crop:
    image = augment.to_unit_float(
        tf.io.decode_jpeg(example['image'], channels=3))
    resize_to = int(round(dc.image_size / dc.eval_crop_fraction))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    s = resize_to / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * s), tf.int32)
    image = tf.image.resize(image, new, method='bilinear', antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, dc.image_size,
                                             dc.image_size)
  else:
    image = _decode(example, builder)
    if image.shape[0] != dc.image_size:
      image = augment.resize(image, dc.image_size)
  return augment.normalize(image, dc.aug.mean, dc.aug.std)


def eval_dataset(dc, builder, split: str, local_batch_size: int,
                 process_index: int, process_count: int) -> tf.data.Dataset:
  """One pass over `split`, padded to whole batches; 'mask' marks real examples."""
  split = tfds.split_for_jax_process(split, process_index=process_index,
                                     process_count=process_count)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders=_decoders(dc))

  def prep(example):
    return {'image': eval_image(example, builder, dc),
            'label': tf.cast(example['label'], tf.int32),
            'mask': tf.constant(True)}

  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch_size, drop_remainder=False)

  def pad(batch):
    n = tf.shape(batch['label'])[0]
    return {k: tf.pad(v, [[0, local_batch_size - n]] + [[0, 0]] * (v.shape.rank - 1))
            for k, v in batch.items()}

  return ds.map(pad).prefetch(tf.data.AUTOTUNE)


def as_numpy(ds: tf.data.Dataset):
  """Iterator of numpy batches."""
  return iter(tfds.as_numpy(ds))
