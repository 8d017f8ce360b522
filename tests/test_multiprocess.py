"""Multi-host for real: two JAX processes on localhost (4 CPU devices each).

They train the tiny config a few steps through the real tf.data pipeline,
each process reading its own half of the split, with `jax.distributed`
started by the CLI flags. The result must equal one process with the same 8
devices stepping on the same global batches (the two processes' local
batches, concatenated), and the checkpoint the two processes wrote must
restore in that single process.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

from configs import tiny  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax import checkpointing  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax import optim  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import tfds_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.models import simsiam  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import fmnist_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.conftest import REPO_ROOT  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.conftest import hold_workdir  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_PROCESSES, LOCAL_DEVICES, STEPS = 2, 4, 4
OVERRIDES = {'data.dataset': 'fashion_mnist_debian', 'data.image_size': 16,
             'data.shuffle_buffer': 64, 'batch_size': 16,
             'num_train_steps': STEPS, 'log_every_steps': 2,
             'checkpoint_every_steps': 2, 'knn.every_epochs': 0,
             'eval.batch_size': 16, 'knn.k': 10}


def _config(data_dir, manual_dir):
  c = tiny.get_config()
  c.update_from_flattened_dict({**OVERRIDES, 'data.data_dir': str(data_dir),
                                'data.manual_dir': str(manual_dir)})
  return c


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(workdirs, manual, tfds_dir):
  """The CLI on NUM_PROCESSES processes, process i on workdirs[i]."""
  port = _free_port()
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={LOCAL_DEVICES}'
  flags = [f'--config.{k}={v}' for k, v in OVERRIDES.items()]
  flags += [f'--config.data.data_dir={tfds_dir}',
            f'--config.data.manual_dir={manual}']
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'simsiam_jax.main', '--config=configs/tiny.py',
       f'--workdir={workdirs[i]}', f'--coordinator_address=localhost:{port}',
       f'--num_processes={NUM_PROCESSES}', f'--process_id={i}', *flags],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(NUM_PROCESSES)]
  logs = [p.communicate(timeout=600)[1] for p in procs]
  return [p.returncode for p in procs], logs


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('mp')
  manual = root / 'manual'
  manual.mkdir()
  fmnist_files.write_random(manual, 96, 40)
  config = _config(root / 'tfds', manual)
  tfds_pipeline.get_builder(config.data)  # prepare once, before the processes start
  return config, root, manual


@pytest.fixture(scope='module')
def two_process_run(data):
  config, root, manual = data
  workdir = root / 'run'
  rcs, logs = _launch([workdir] * NUM_PROCESSES, manual, root / 'tfds')
  for rc, log in zip(rcs, logs):
    assert rc == 0, log[-4000:]
  return config, workdir, logs


@pytest.mark.slow
def test_a_workdir_one_process_cannot_take_stops_them_all(data, tmp_path):
  """No process is left waiting in a collective for one that stopped."""
  _, root, manual = data
  held = tmp_path / 'held'
  held.mkdir()
  holder = hold_workdir(held, seconds=600)
  try:
    start = time.monotonic()
    rcs, logs = _launch([held] * NUM_PROCESSES, manual, root / 'tfds')
    assert time.monotonic() - start < 120
  finally:
    holder.kill()
  assert rcs == [2] * NUM_PROCESSES, logs
  assert f'in use by pid {holder.pid}' in logs[0]
  assert 'Process 0 could not take the workdir' in logs[1]
  assert not (held / 'config.json').exists()
  # Each process on a folder of its own, as with a local path on each host:
  # process 1 does not find process 0's run id in its lock file.
  rcs, logs = _launch([tmp_path / 'host0', tmp_path / 'host1'], manual,
                      root / 'tfds')
  assert rcs == [2] * NUM_PROCESSES, logs
  assert 'does not belong to this run' in logs[1]
  assert 'same shared --workdir' in logs[1]
  assert 'Process 1 could not take the workdir' in logs[0]


def _reference(config):
  """One process, 8 devices, the two processes' local batches concatenated."""
  mesh = parallel.create_mesh()
  builder = tfds_pipeline.get_builder(config.data)
  local = config.batch_size // NUM_PROCESSES
  iters = [tfds_pipeline.as_numpy(tfds_pipeline.train_dataset(
      config.data, builder, config.seed, local, p, NUM_PROCESSES))
           for p in range(NUM_PROCESSES)]
  model = simsiam.create_model(config.model)
  steps_per_epoch, _ = sources.num_steps(config, 96)  # as the trainer does
  tx, schedule = optim.create_optimizer(config, steps_per_epoch, STEPS)
  state = state_lib.create(
      state_lib.simsiam_initializer(model, tx, (16, 16, 3)),
      mesh, jax.random.key(config.seed))
  step = train.make_train_step(config, mesh, schedule)
  losses = []
  for _ in range(STEPS):
    parts = [next(it) for it in iters]
    batch = {k: np.concatenate([b[k] for b in parts])
             for k in ('view1', 'view2')}
    state, metrics = step(state, parallel.host_to_global(batch, mesh))
    losses.append(float(metrics['loss']))
  return state, losses, model, tx, mesh


@pytest.mark.slow
def test_two_processes_equal_one(two_process_run):
  config, workdir, logs = two_process_run
  assert 'JAX process 0/2; 4 local devices, 8 global devices' in logs[0]
  assert 'JAX process 1/2; 4 local devices, 8 global devices' in logs[1]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['step'] == STEPS and 0 <= summary['knn_top1'] <= 1
  ref_state, ref_losses, model, tx, mesh = _reference(config)
  # summary.json's loss is the mean over the last log window (steps 3-4).
  np.testing.assert_allclose(summary['loss'], np.mean(ref_losses[2:]),
                             rtol=1e-5, atol=1e-6)
  # The checkpoint written by the two processes restores in this one.
  ckpt = checkpointing.Checkpointer(str(workdir), config, read_only=True)
  restored = ckpt.restore(state_lib.abstract(
      state_lib.simsiam_initializer(model, tx, (16, 16, 3)),
      mesh, jax.random.key(0)))
  assert parallel.step_of(restored) == STEPS
  for name in ('params', 'batch_stats', 'opt_state'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5),
                 getattr(restored, name), getattr(ref_state, name))
