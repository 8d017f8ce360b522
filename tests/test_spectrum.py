"""Effective rank and participation ratio: known spectra, NumPy, devices.

The monitor of dimensional collapse (evaluation/spectrum.py) in the train
step (the batch's z at log steps) and at each kNN evaluation (clean images).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import state as state_lib
from simsiam_jax import train
from simsiam_jax.data import synthetic
from simsiam_jax.evaluation import collapse
from simsiam_jax.evaluation import monitor
from simsiam_jax.evaluation import spectrum
from simsiam_jax.models import simsiam


def _numpy_rankme(x):
  s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
  p = s / s.sum() + spectrum.RANKME_EPS
  return float(np.exp(-np.sum(p * np.log(p))))


def _numpy_pr(x):
  x = np.asarray(x, np.float64)
  lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
  return float(lam.sum() ** 2 / np.sum(lam ** 2))


def _planted(n, d, k, seed=0):
  """[n, d] with k equal nonzero singular values and centred columns."""
  rng = np.random.default_rng(seed)
  a = rng.standard_normal((n, k))
  u, _ = np.linalg.qr(a - a.mean(0))  # centred, orthonormal columns
  v, _ = np.linalg.qr(rng.standard_normal((d, k)))
  return (3.0 * u @ v.T).astype(np.float32)


@pytest.mark.parametrize('d', [1, 7, 64])
def test_identity_spreads_over_d(d):
  assert float(spectrum.effective_rank(jnp.eye(d))) == pytest.approx(d, rel=1e-4)
  # [I; -I]: centred rows, covariance proportional to the identity.
  both = jnp.concatenate([jnp.eye(d), -jnp.eye(d)])
  assert float(spectrum.participation_ratio(both)) == pytest.approx(d, rel=1e-4)


def test_rank_one_is_one():
  rng = np.random.default_rng(1)
  x = np.outer(rng.standard_normal(50), rng.standard_normal(20))
  assert float(spectrum.effective_rank(x)) == pytest.approx(1.0, abs=1e-3)
  assert float(spectrum.participation_ratio(x)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize('n,d,k', [(200, 64, 5), (40, 128, 12), (300, 30, 30)])
def test_planted_rank_k_is_k(n, d, k):
  x = _planted(n, d, k)
  assert float(spectrum.effective_rank(x)) == pytest.approx(k, rel=1e-3)
  assert float(spectrum.participation_ratio(x)) == pytest.approx(k, rel=1e-3)


def test_against_numpy_on_a_decaying_spectrum():
  rng = np.random.default_rng(2)
  x = (rng.standard_normal((256, 48)) * np.geomspace(5, 0.01, 48) + 2.0
       ).astype(np.float32)
  assert float(spectrum.effective_rank(x)) == pytest.approx(
      _numpy_rankme(x), rel=1e-4)
  assert float(spectrum.participation_ratio(x)) == pytest.approx(
      _numpy_pr(x), rel=1e-4)
  # Wider than tall: the N x N Gram is formed instead of the D x D one.
  assert float(spectrum.participation_ratio(x[:20])) == pytest.approx(
      _numpy_pr(x[:20]), rel=1e-4)


def test_sharded_over_eight_devices_equals_one():
  rng = np.random.default_rng(3)
  x = (rng.standard_normal((64, 32)) * np.geomspace(3, 0.1, 32)
       ).astype(np.float32)
  mesh = parallel.create_mesh()
  sharded = jax.device_put(x, parallel.data_sharded(mesh))
  on_mesh = jax.jit(spectrum.spread)(sharded)
  alone = spectrum.spread(jax.device_put(x, jax.devices()[0]))
  for k in ('rank', 'pr', 'corr'):
    np.testing.assert_allclose(float(on_mesh[k]), float(alone[k]), rtol=1e-5)


def test_mean_abs_correlation_against_numpy():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((300, 24))
  x[:, 1] = 0.8 * x[:, 0] - 0.3 * x[:, 2] + 0.1 * x[:, 1]   # correlated
  x[:, 5] = -x[:, 3] + 4.0                                   # anti-correlated
  x = x.astype(np.float32)
  corr = np.corrcoef(np.asarray(x, np.float64), rowvar=False)
  want = np.abs(corr[~np.eye(24, dtype=bool)]).mean()
  assert float(spectrum.mean_abs_correlation(x)) == pytest.approx(want,
                                                                  rel=1e-4)


def test_mean_abs_correlation_extremes():
  rng = np.random.default_rng(5)
  # Every column one direction (signs and scales differ): 1.
  one = np.outer(rng.standard_normal(64), rng.standard_normal(16))
  assert float(spectrum.mean_abs_correlation(one)) == pytest.approx(1.0,
                                                                    abs=1e-4)
  # Orthogonal centred columns: 0; a dead (constant) column counts as 0.
  q = _planted(64, 16, 16)
  q[:, 3] = 2.0
  assert float(spectrum.mean_abs_correlation(q)) == pytest.approx(0.0,
                                                                  abs=1e-5)


def _steps(config, devices, batches):
  """Metrics of the train step over `batches` on a mesh of `devices`, and
  z1 of the first batch computed apart by the model."""
  mesh = parallel.create_mesh(devices)
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, steps_per_epoch=16,
                                        num_train_steps=64)
  shape = batches[0]['view1'].shape[1:]
  state = state_lib.create(
      state_lib.simsiam_initializer(model, tx, shape), mesh, jax.random.key(0))
  (z1, *_), _ = model.apply(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batches[0]['view1'], batches[0]['view2'], train=True,
      mutable=['batch_stats'])
  step = train.make_train_step(config, mesh, schedule, num_train_steps=3)
  metrics = []
  for batch in batches:
    state, m = step(state, parallel.host_to_global(batch, mesh))
    metrics.append(jax.device_get(m))
  return metrics, np.asarray(z1)


@pytest.fixture(scope='module')
def step_metrics():
  config = tiny.get_config()
  config.log_every_steps = 2
  it = synthetic.train_batches(64, 16, 3, 32, seed=0)
  batches = [{k: b[k] for k in ('view1', 'view2')}
             for b in (next(it) for _ in range(3))]
  return (_steps(config, jax.devices()[:1], batches),
          _steps(config, jax.devices(), batches))


def test_batch_spread_is_measured_at_log_steps_only(step_metrics):
  (metrics, _), _ = step_metrics
  # log_every 2, 3 steps: measured at step 2 (a window's end) and 3 (the last).
  for k in train.SAMPLED_METRICS:
    assert [bool(np.isnan(m[k])) for m in metrics] == [True, False, False]


def test_batch_spread_is_of_the_global_batch_on_one_and_eight_devices(
    step_metrics):
  (m1, z1), (m8, _) = step_metrics
  for k in train.SAMPLED_METRICS:
    np.testing.assert_allclose([m[k] for m in m1], [m[k] for m in m8],
                               rtol=1e-4)
  # Step 1 (index 0) is not measured; check the formula on the first step's
  # z by measuring every step.
  config = tiny.get_config()
  config.log_every_steps = 1
  it = synthetic.train_batches(64, 16, 3, 32, seed=0)
  first = {k: v for k, v in next(it).items() if k in ('view1', 'view2')}
  (m,), z = _steps(config, jax.devices(), [first])
  np.testing.assert_allclose(z, z1, rtol=1e-5, atol=1e-6)
  assert float(m['batch_z_rank']) == pytest.approx(_numpy_rankme(z), rel=1e-4)
  assert float(m['batch_z_pr']) == pytest.approx(_numpy_pr(z), rel=1e-4)


def _monitor_config(cache_dir):
  c = tiny.get_config()
  c.eval.batch_size = 64
  c.knn.k = 20
  c.knn.rank_images = 100
  c.knn.cache_dir = str(cache_dir)
  return c


def test_monitor_spread_on_one_and_eight_devices(tmp_path):
  config = _monitor_config(tmp_path)
  model = simsiam.create_model(config.model)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mon = monitor.KnnMonitor(config, model, parallel.create_mesh(devices))
    variables = jax.device_get(mon.random_init_variables(0))
    results.append((mon.spread(variables), mon.spread_baselines(),
                    mon.host_features(variables, 'train')[0][:100],
                    mon.host_features(None, 'train', 'pixels')[0][:100]))
  (one, base1, feats, pixels), (eight, base8, _, _) = results
  assert set(one) == {'feature_rank', 'feature_pr', 'feature_corr', 'z_rank',
                      'z_pr', 'z_corr'}
  for k in one:
    assert one[k] == pytest.approx(eight[k], rel=1e-4)
  for k in base1:
    assert base1[k] == pytest.approx(base8[k], rel=1e-4)
  # The first 100 clean train images, as the kNN bank sees them.
  assert one['feature_rank'] == pytest.approx(_numpy_rankme(feats), rel=1e-4)
  assert one['feature_pr'] == pytest.approx(_numpy_pr(feats), rel=1e-4)
  assert base1['feature_rank_raw_pixels'] == pytest.approx(
      _numpy_rankme(pixels), rel=1e-4)
  assert set(base1) == {f'{k}_{b}' for k in one for b in ('random_init',)} | {
      'feature_rank_raw_pixels', 'feature_pr_raw_pixels',
      'feature_corr_raw_pixels'}


def test_watch_sees_dimensional_collapse(caplog):
  watch = collapse.CollapseWatch(threshold=0.2, patience_steps=10, stop=False,
                                 min_rank=8.0)
  healthy_std = {'collapse_std': 0.99}
  watch.update(10, {**healthy_std, 'batch_z_rank': 20.0})
  watch.update(20, {**healthy_std, 'batch_z_rank': 5.0})
  with caplog.at_level('WARNING'):
    watch.update(30, {**healthy_std, 'batch_z_rank': 4.5})
  assert 'effective rank of z 4.5 < collapse.min_rank=8' in caplog.text
  assert 'since step 20' in caplog.text and 'weight_decay' in caplog.text
  off = collapse.CollapseWatch(0.2, 0, stop=True)  # min_rank 0: rank ignored
  off.update(10, {**healthy_std, 'batch_z_rank': 1.0})
  assert off.healthy


def test_a_run_under_the_rank_floor_stops(tmp_path):
  """The trainer feeds the batch's z rank to the watch: a floor above any
  possible rank (z is 32-d) stops the run at its first log line."""
  config = tiny.get_config()
  config.collapse.min_rank = 1000.0
  config.collapse.patience_steps = 0
  config.collapse.stop = True
  with pytest.raises(collapse.Collapsed,
                     match=r'effective rank of z [0-9.]+ < collapse.min_rank'
                           r'=1000 since step 2'):
    train.train_and_evaluate(config, str(tmp_path))
