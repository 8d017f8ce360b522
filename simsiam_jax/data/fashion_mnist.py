"""Offline Fashion-MNIST as a TFDS dataset, from Debian's `dataset-fashion-mnist`.

TFDS' own `fashion_mnist` builder checks download checksums, which Debian's
re-gzipped files fail; this builder reads the same IDX files from
`manual_dir` and prepares an ordinary TFDS dataset once. Install the files
with `apt-get install -y dataset-fashion-mnist`.
"""

import os

import tensorflow_datasets as tfds

from simsiam_jax.data import idx_files



class FashionMnistDebian(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (70k 28x28 grayscale images, 10 classes) from local IDX files."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'From Debian dataset-fashion-mnist IDX files.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Run `apt-get install -y dataset-fashion-mnist` (files land in '
      f'{idx_files.DEBIAN_DIR}), or put the four Fashion-MNIST .gz IDX files '
      'in manual_dir.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(names=idx_files.CLASSES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/zalandoresearch/fashion-mnist')

  def _split_generators(self, dl_manager):
    directory = str(dl_manager.manual_dir)
    missing = idx_files.missing_files(directory)
    if missing:
      raise FileNotFoundError(
          f'Fashion-MNIST files {missing} not found in {directory}. '
          + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {split: self._generate_examples(directory, *names)
            for split, names in idx_files.FILES.items()}

  def _generate_examples(self, directory, images_file, labels_file):
    images = idx_files.read_idx(os.path.join(directory, images_file))
    labels = idx_files.read_idx(os.path.join(directory, labels_file))
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image[..., None], 'label': int(label)}
