"""The sharded train step: device-count invariance, start-up checks, the loop."""

import json
import os

import jax
import numpy as np
import pytest

from configs import imagenet
from configs import tiny
from simsiam_jax import loop
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import state as state_lib
from simsiam_jax import train
from simsiam_jax import workdir as workdir_lib
from simsiam_jax.data import sources
from simsiam_jax.data import synthetic
from simsiam_jax.models import simsiam


def _one_step(config, devices, batch):
  """State after one train step on a mesh over `devices`, fetched to host."""
  mesh = parallel.create_mesh(devices)
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, steps_per_epoch=16,
                                        num_train_steps=64)
  shape = batch['view1'].shape[1:]
  state = state_lib.create(
      state_lib.simsiam_initializer(model, tx, shape), mesh, jax.random.key(0))
  step = train.make_train_step(config, mesh, schedule)
  state, metrics = step(state, parallel.host_to_global(batch, mesh))
  return jax.device_get((state.params, state.batch_stats, state.opt_state,
                         metrics))


@pytest.fixture(scope='module')
def one_vs_eight():
  config = tiny.get_config()
  batch = next(synthetic.train_batches(64, 16, 3, 16, seed=0))
  batch = {k: batch[k] for k in ('view1', 'view2')}
  return (_one_step(config, jax.devices()[:1], batch),
          _one_step(config, jax.devices(), batch))


def _max_abs_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_one_and_eight_devices_agree(one_vs_eight):
  """Same global batch: same loss, parameters and (global) BN statistics."""
  (p1, bs1, opt1, m1), (p8, bs8, opt8, m8) = one_vs_eight
  np.testing.assert_allclose(m1['loss'], m8['loss'], rtol=1e-5, atol=1e-6)
  assert _max_abs_diff(p1, p8) < 1e-5
  assert _max_abs_diff(bs1, bs8) < 1e-5
  assert _max_abs_diff(opt1, opt8) < 1e-5
  # The step did change something, so the comparison is not vacuous.
  assert _max_abs_diff(bs1, jax.tree.map(np.zeros_like, bs1)) > 0


def test_metrics_are_sane(one_vs_eight):
  (_, _, _, m), _ = one_vs_eight
  assert -1.0 <= float(m['loss']) <= 1.0
  assert 0.0 < float(m['collapse_std']) <= 1.5
  np.testing.assert_allclose(m['learning_rate'],
                             optim.scaled_lr(0.05, 16), rtol=1e-6)


def test_indivisible_batch_is_a_startup_error():
  mesh = parallel.create_mesh()
  with pytest.raises(ValueError, match=r'batch_size=12 .* 8 devices.*multiple'):
    parallel.check_batch_size(12, mesh)
  assert parallel.check_batch_size(16, mesh) == 16


def test_batch_larger_than_dataset_is_an_error():
  config = tiny.get_config()
  config.batch_size = 512
  with pytest.raises(ValueError, match='larger than the training split'):
    sources.num_steps(config, 256)


def test_num_steps_from_epochs():
  config = tiny.get_config()
  config.num_train_steps = -1
  config.num_epochs = 3.0
  assert sources.num_steps(config, 256) == (16, 48)


@pytest.mark.slow  # ResNet-50's compile alone takes about a minute here
def test_imagenet_config_runs_one_step_at_reduced_size():
  config = imagenet.get_config()
  config.batch_size = 8
  config.data.image_size = 32
  batch = next(synthetic.train_batches(8, 32, 3, 8, seed=0))
  batch = {k: batch[k] for k in ('view1', 'view2')}
  params, _, _, metrics = _one_step(config, jax.devices(), batch)
  assert np.isfinite(metrics['loss'])
  assert params['projector']['dense2']['kernel'].shape == (2048, 2048)
  assert params['predictor']['dense0']['kernel'].shape == (2048, 512)


def test_nonfinite_loss_stops_naming_the_step(tmp_path, monkeypatch):
  config = tiny.get_config()
  config.num_train_steps = 6
  config.log_every_steps = 3
  real = sources.create_train_iterator

  def poisoned(config, local_batch, start_step=0):
    for i, batch in enumerate(real(config, local_batch, start_step)):
      if i == 4:  # the 5th step
        batch = dict(batch, view1=np.full_like(batch['view1'], np.nan))
      yield batch

  monkeypatch.setattr(sources, 'create_train_iterator', poisoned)
  config.checkpoint_every_steps = 2
  with pytest.raises(FloatingPointError,
                     match='at step 5.*last good checkpoint is step 4'):
    train.train_and_evaluate(config, str(tmp_path))
  # The bad state (step 5, 6) was never saved.
  assert sorted(int(d.name) for d in (tmp_path / 'checkpoints').iterdir()
                if d.name.isdigit()) == [2, 4]
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in rows if 'loss' in r] == [3]
  assert not os.path.exists(tmp_path / workdir_lib.SUMMARY_FILE)


def _losses(config, num_steps=8):
  """Losses of `num_steps` steps on 8 devices, and the final state's dtypes."""
  mesh = parallel.create_mesh()
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, steps_per_epoch=16,
                                        num_train_steps=64)
  state = state_lib.create(
      state_lib.simsiam_initializer(model, tx, (16, 16, 3)),
      mesh, jax.random.key(0))
  step = train.make_train_step(config, mesh, schedule)
  batches = synthetic.train_batches(256, 16, 3, 32, seed=0)
  losses = []
  for _ in range(num_steps):
    batch = next(batches)
    batch = {k: batch[k] for k in ('view1', 'view2')}
    state, metrics = step(state, parallel.host_to_global(batch, mesh))
    losses.append(float(metrics['loss']))
  dtypes = {str(x.dtype) for x in jax.tree.leaves(
      (state.params, state.batch_stats, state.opt_state)) if x.ndim}
  return np.array(losses), dtypes


def test_bfloat16_step_tracks_float32():
  """bf16 compute, float32 parameters, BN statistics and optimiser state."""
  config = tiny.get_config()
  config.batch_size = 32
  config.optim.base_lr = 0.5
  f32, f32_dtypes = _losses(config)
  config.model.dtype = 'bfloat16'
  bf16, bf16_dtypes = _losses(config)
  assert f32_dtypes == bf16_dtypes == {'float32'}
  # Measured: the losses differ by up to 0.009 over 8 steps (they range
  # over -0.03 ... -0.08); bf16 must stay within 0.03 of float32 ...
  np.testing.assert_allclose(bf16, f32, atol=0.03)
  # ... and did compute in bf16 (else they would agree to ~1e-6).
  assert np.abs(bf16 - f32).max() > 1e-3


@pytest.mark.parametrize('env,expected', [
    ({}, None),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}, None),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}, ()),
    ({'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3'}, ()),
    ({'TPU_WORKER_HOSTNAMES': 'localhost'}, None),
    ({'SIMSIAM_DISTRIBUTED': '1'}, ()),
    ({'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '2',
      'JAX_PROCESS_ID': '1'}, ('h:1', 2, 1)),
])
def test_distributed_start_up_is_detected(monkeypatch, env, expected):
  for k in ('SLURM_JOB_ID', 'SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES',
            'SIMSIAM_DISTRIBUTED', 'JAX_COORDINATOR_ADDRESS',
            'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(k, raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda *args: calls.append(args))
  parallel.initialize_distributed()
  assert calls == ([] if expected is None else [expected])


def test_progress_rate_excludes_the_steps_before_an_evaluation(monkeypatch):
  clock = iter([0.0, 10.0, 20.0, 50.0, 60.0])  # start, step 1, 20, eval end, 40
  monkeypatch.setattr(loop.time, 'perf_counter', lambda: next(clock))
  progress = loop.Progress(num_train_steps=100, global_batch_size=10)
  progress.first_step_done(1)          # t = 10
  assert progress.rate(20)['steps_per_sec'] == pytest.approx(19 / 10)
  progress.pause_done(20)              # evaluation from t = 20 to 50
  # Steps 21-40 ran in the 10 s after the evaluation: 2 steps/s, 20 img/s.
  assert progress.rate(40)['images_per_sec'] == pytest.approx(20.0)
