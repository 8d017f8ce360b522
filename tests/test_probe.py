"""The fast linear probe: logistic regression on frozen features, by L-BFGS."""

import json

import jax
import numpy as np
import pytest
from sklearn import linear_model

from configs import tiny
from simsiam_jax import checkpointing
from simsiam_jax import main
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import state as state_lib
from simsiam_jax.evaluation import probe
from simsiam_jax.models import simsiam


def _clusters(seed, n_train, n_test, dim, num_classes, noise):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((num_classes, dim))
  out = []
  for n in (n_train, n_test):
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    out += [(centres[labels] + noise * rng.standard_normal((n, dim))
             ).astype(np.float32), labels]
  return out


def test_separable_features_are_all_classified():
  # A large offset on top: standardisation must take it away.
  x_train, y_train, x_test, y_test = _clusters(0, 200, 100, 10, 4, 0.05)
  result = probe.fast_linear_probe(x_train + 100, y_train, x_test + 100,
                                   y_test, l2_grid=(1e-4,))
  assert result['top1'] == 1.0 and result['train_top1'] == 1.0


def test_matches_scikit_learn():
  x_train, y_train, x_test, y_test = _clusters(1, 600, 300, 20, 5, 2.0)
  l2 = 1e-2
  result = probe.fast_linear_probe(x_train, y_train, x_test, y_test,
                                   l2_grid=(l2,))
  a, b = probe.standardize(x_train, x_test)
  # scikit-learn minimises C sum(CE) + |w|^2 / 2; with C = 1 / (l2 N) that is
  # (mean CE + l2 |w|^2 / 2) / l2: the probe's objective, the same minimiser.
  sk = linear_model.LogisticRegression(C=1 / (l2 * len(a)), max_iter=5000,
                                       tol=1e-10).fit(a, y_train)
  want = sk.score(b, y_test)
  assert 0.5 < want < 0.95  # a problem where the fit matters
  assert result['top1'] == pytest.approx(want, abs=0.01)


def test_deterministic_and_l2_picked_without_the_test_split():
  x_train, y_train, x_test, y_test = _clusters(2, 400, 200, 30, 5, 2.5)
  kwargs = dict(l2_grid=(1e-4, 1e-3, 1e-2, 1e-1), holdout_fraction=0.2)
  first = probe.fast_linear_probe(x_train, y_train, x_test, y_test, **kwargs)
  assert probe.fast_linear_probe(x_train, y_train, x_test, y_test,
                                 **kwargs) == first
  assert sorted(first['holdout_top1']) == [1e-4, 1e-3, 1e-2, 1e-1]
  assert first['l2'] == max(first['holdout_top1'],
                            key=lambda l2: (first['holdout_top1'][l2], l2))
  # Other test data change the score only, never the choice or the fit.
  shuffled = probe.fast_linear_probe(x_train, y_train, x_test[::-1] * 3,
                                     y_test * 0, **kwargs)
  assert shuffled['l2'] == first['l2']
  assert shuffled['train_top1'] == first['train_top1']


def test_fast_probe_mode_on_a_pretraining_checkpoint(tmp_path):
  config = tiny.get_config()
  config.eval.batch_size = 64
  config.knn.cache_dir = str(tmp_path / 'cache')
  # A pretraining run's step-0 checkpoint (no train step to compile).
  pretrain_dir = str(tmp_path / 'pretrain')
  mesh = parallel.create_mesh()
  tx, _ = optim.create_optimizer(config, 1, 1 << 30)
  state = state_lib.create(
      state_lib.simsiam_initializer(
          simsiam.create_model(config.model), tx, (16, 16, 3)),
      mesh, jax.random.key(0))
  ckpt = checkpointing.Checkpointer(pretrain_dir, config)
  ckpt.save(0, state, force=True)
  ckpt.wait()
  config.mode = 'fast_probe'
  config.pretrained.workdir = pretrain_dir
  config.probe.l2_grid = (1e-3, 1e-2)
  config.probe.max_iters = 100
  summary = main.MODES['fast_probe'](config, str(tmp_path / 'probe'))
  # 10 synthetic classes, made linearly separable.
  assert summary['probe_top1'] > 0.9, summary
  assert summary['probe_raw_pixels_top1'] > 0.9, summary
  assert summary['step'] == 0 and summary['probe_l2'] in (1e-3, 1e-2)
  with open(tmp_path / 'probe' / 'summary.json') as f:
    assert json.load(f) == summary
  assert len(list((tmp_path / 'cache').glob('probe_raw_pixels_*.json'))) == 1
