"""The paper's headline experiment in miniature (Figure 2): stop-gradient.

Two short runs on real Fashion-MNIST images (a subset of Debian's files),
same seed and data, with and without stop-gradient. Without it the outputs
collapse to a constant (the collapse statistic goes to 0) and kNN accuracy
falls; with it the statistic stays near 1. EXPERIMENTS.md has the full-size
version.
"""

import pytest

pytest.importorskip('tensorflow')

from configs import fashion_mnist as fm_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import fmnist_files  # pylint: disable=g-import-not-at-top,wrong-import-position

N_TRAIN, N_TEST = 2048, 512


def experiment_config(data_dir, manual_dir, stop_gradient: bool):
  c = fm_config.get_config()
  c.seed = 0
  c.batch_size = 64
  c.num_train_steps = 100
  c.log_every_steps = 10
  c.checkpoint_every_steps = 10_000  # the final one only
  c.model.width = 8
  c.model.proj_hidden_dim = 64
  c.model.proj_dim = 64
  c.model.pred_hidden_dim = 16
  # Collapse comes fastest without BN on the projector output (paper Table
  # 3, 'hidden'); with it, a CI-sized run is too short to see it (std 0.82 after 100 steps).
  c.model.head_bn = 'hidden'
  c.optim.base_lr = 0.5
  c.optim.schedule = 'constant'
  # The settings these thresholds were measured with (the demo's recipe has
  # moved on: its crops, residual init and data path change 100-step runs).
  c.model.zero_init_residual = True
  c.data.aug.crop_scale = (0.2, 1.0)
  c.data.aug.jitter_prob = 0.8
  c.data.aug.brightness = c.data.aug.contrast = 0.4
  c.data.resident = False
  c.data.augment_on = 'host'
  c.knn.every_epochs = 0
  c.loss.stop_gradient = stop_gradient
  c.collapse.patience_steps = 40
  c.eval.batch_size = 256
  c.data.data_dir = str(data_dir)
  c.data.manual_dir = str(manual_dir)
  c.data.shuffle_buffer = N_TRAIN
  return c


@pytest.mark.slow
@pytest.mark.skipif(not fmnist_files.debian_available(),
                    reason='needs Debian dataset-fashion-mnist (make test '
                    'installs it)')
def test_without_stop_gradient_collapses(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  fmnist_files.write_debian_subset(manual, N_TRAIN, N_TEST)
  runs = {}
  for sg in (True, False):
    config = experiment_config(tmp_path / 'tfds', manual, sg)
    runs[sg] = train.train_and_evaluate(config, str(tmp_path / f'sg_{sg}'))
  with_sg, without = runs[True], runs[False]
  print('with stop-gradient:', with_sg)
  print('without:', without)
  # Without stop-gradient: the loss runs to its trivial minimum, -1, as the
  # outputs collapse (measured: std 0.10, loss -0.995 at step 100).
  assert without['loss'] < -0.98
  assert without['collapse_std'] < 0.15
  # With it: no collapse (measured: std 0.80), and better features (kNN
  # 48.2 % vs 42.6 %). 100 steps are too few for the backbone to collapse to
  # chance kNN; EXPERIMENTS.md has the full-size runs.
  assert with_sg['collapse_std'] > 0.6
  assert with_sg['knn_top1'] > without['knn_top1'] + 0.02
