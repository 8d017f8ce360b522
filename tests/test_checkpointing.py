"""Checkpoints: exact resume after SIGTERM, kills during saves, bad checkpoints."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from configs import tiny
from simsiam_jax import checkpointing
from simsiam_jax.configs import default
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import preemption
from simsiam_jax import state as state_lib
from simsiam_jax import train
from simsiam_jax.models import simsiam
from tests.conftest import REPO_ROOT

NUM_STEPS = 120
OVERRIDES = [f'--config.num_train_steps={NUM_STEPS}',
             '--config.log_every_steps=5', '--config.checkpoint_every_steps=1000']


def _config():
  config = tiny.get_config()
  config.num_train_steps = NUM_STEPS
  config.log_every_steps = 5
  config.checkpoint_every_steps = 1000
  return config


def _env(num_devices=8):
  env = os.environ.copy()
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={num_devices}'
  return env


def _start(workdir, num_devices=8, extra=()):
  return subprocess.Popen(
      [sys.executable, '-m', 'simsiam_jax.main', '--config=configs/tiny.py',
       f'--workdir={workdir}', *OVERRIDES, *extra], cwd=REPO_ROOT,
      env=_env(num_devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _run(workdir, num_devices=8):
  proc = _start(workdir, num_devices)
  out, _ = proc.communicate(timeout=300)
  return proc.returncode, out


def _sigterm_midway(workdir):
  """Starts a run, sends SIGTERM once it is training, returns (code, output)."""
  proc = _start(workdir)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if f'step 10/{NUM_STEPS}' in line:
      proc.send_signal(signal.SIGTERM)
      break
  out, _ = proc.communicate(timeout=300)
  return proc.returncode, ''.join(lines) + out


def _restore(workdir, mesh=None):
  config = _config()
  mesh = mesh or parallel.create_mesh()
  model = simsiam.create_model(config.model)
  tx, _ = optim.create_optimizer(config, 16, NUM_STEPS)
  abstract = state_lib.abstract(
      state_lib.simsiam_initializer(model, tx, (16, 16, 3)),
      mesh, jax.random.key(0))
  state = checkpointing.Checkpointer(str(workdir), config).restore(abstract)
  return jax.device_get(state)


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(workdir / 'checkpoints')
                if d.isdigit())


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('straight')
  train.train_and_evaluate(_config(), str(workdir))
  return _restore(workdir)


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
  """A run stopped by SIGTERM part way; the workdir as it left it."""
  workdir = tmp_path_factory.mktemp('interrupted')
  code, out = _sigterm_midway(workdir)
  return workdir, code, out


def test_sigterm_saves_and_exits_with_preempted_code(interrupted):
  workdir, code, out = interrupted
  assert code == preemption.PREEMPTED_EXIT_CODE, out[-3000:]
  (step,) = _steps(workdir)
  assert 10 <= step < NUM_STEPS
  assert f'saved step {step}' in out


def _assert_trees(a, b, exact, atol=0.0):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if exact:
      np.testing.assert_array_equal(x, y)
    else:
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=atol)


def test_resume_equals_straight_run_bit_for_bit(straight, interrupted,
                                                tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(interrupted[0], workdir)
  code, out = _run(workdir)
  assert code == 0, out[-3000:]
  assert 'Resumed from the checkpoint at step' in out
  resumed = _restore(workdir)
  assert int(resumed.step) == int(straight.step) == NUM_STEPS
  # Same program, same data from the same position: identical bits.
  _assert_trees(resumed.params, straight.params, exact=True)
  _assert_trees(resumed.opt_state, straight.opt_state, exact=True)
  _assert_trees(resumed.batch_stats, straight.batch_stats, exact=True)


def test_resume_on_four_devices(interrupted, tmp_path):
  """The CLI resumes an 8-device checkpoint on 4 devices and finishes."""
  workdir = tmp_path / 'run'
  shutil.copytree(interrupted[0], workdir)
  code, out = _run(workdir, num_devices=4)
  assert code == 0, out[-3000:]
  assert 'Resumed from the checkpoint at step' in out
  assert '4 global devices' in out
  assert max(_steps(workdir)) == NUM_STEPS


def test_restore_on_other_device_count_continues_identically(interrupted):
  """Restored onto 4 or 8 devices, the next steps agree to float tolerance.

  (Compared a few steps on: over a hundred SGD steps, float rounding
  differences grow chaotically and say nothing about the restore.)
  """
  from simsiam_jax.data import sources  # pylint: disable=g-import-not-at-top
  workdir, _, _ = interrupted
  config = _config()
  results = []
  for n in (8, 4):
    mesh = parallel.create_mesh(jax.devices()[:n])
    model = simsiam.create_model(config.model)
    tx, schedule = optim.create_optimizer(config, 16, NUM_STEPS)
    abstract = state_lib.abstract(
      state_lib.simsiam_initializer(model, tx, (16, 16, 3)),
      mesh, jax.random.key(0))
    state = checkpointing.Checkpointer(str(workdir), config).restore(abstract)
    assert state.params['projector']['dense0']['kernel'].sharding.mesh == mesh
    step_fn = train.make_train_step(config, mesh, schedule)
    it = sources.create_train_iterator(config, 16, int(state.step))
    for _ in range(3):
      batch = {k: v for k, v in next(it).items() if k != 'label'}
      state, _ = step_fn(state, parallel.host_to_global(batch, mesh))
    results.append(jax.device_get(state))
  _assert_trees(results[0].params, results[1].params, exact=False, atol=1e-5)
  _assert_trees(results[0].batch_stats, results[1].batch_stats, exact=False,
                atol=1e-5)


def test_kill_during_async_save_leaves_a_restorable_checkpoint(tmp_path):
  proc = _start(tmp_path, extra=['--config.checkpoint_every_steps=1'])
  deadline = time.time() + 120
  while time.time() < deadline:
    if (tmp_path / 'checkpoints').exists() and len(_steps(tmp_path)) >= 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)  # very likely with a save in flight
  proc.communicate(timeout=60)
  state = _restore(tmp_path)
  assert int(state.step) == max(_steps(tmp_path)) >= 2


def test_partial_and_corrupt_checkpoints_are_skipped(interrupted, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(interrupted[0], workdir)
  (good,) = _steps(workdir)
  ckpts = workdir / 'checkpoints'
  # A newer checkpoint whose state files are gone: unreadable.
  shutil.copytree(ckpts / str(good), ckpts / str(good + 5))
  shutil.rmtree(ckpts / str(good + 5) / 'state')
  # A save that never finished (Orbax's temporary folder).
  (ckpts / f'{good + 9}.orbax-checkpoint-tmp-1234').mkdir()
  state = _restore(workdir)
  assert int(state.step) == good


def test_other_model_is_refused_and_checkpoints_untouched(interrupted,
                                                          tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(interrupted[0], workdir)
  before = {p: os.path.getmtime(p) for p in
            map(str, (workdir / 'checkpoints').rglob('*'))}
  saved_config = (workdir / 'config.json').read_text()
  proc = _start(workdir, extra=['--config.model.width=16',
                                '--config.model.proj_dim=64'])
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2, out[-3000:]
  assert 'model.width: saved 8, now 16' in out
  assert 'model.proj_dim: saved 32, now 64' in out
  after = {p: os.path.getmtime(p) for p in
           map(str, (workdir / 'checkpoints').rglob('*'))}
  assert before == after
  assert (workdir / 'config.json').read_text() == saved_config


def test_unreadable_checkpoints_never_restart_silently(tmp_path):
  ckpts = tmp_path / 'checkpoints' / '7'
  ckpts.mkdir(parents=True)
  (ckpts / 'garbage').write_text('not a checkpoint')
  with pytest.raises(RuntimeError, match='none can be read'):
    _restore(tmp_path)


@pytest.fixture
def tiny_disk(tmp_path):
  """A 300 KB tmpfs: room for the config and logs, not for a checkpoint."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=300k', 'tmpfs',
                         str(mount)], capture_output=True)
  if done.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {done.stderr.decode()[:200]}')
  yield mount
  subprocess.run(['umount', str(mount)], check=False)


def test_disk_full_is_one_clear_error(tiny_disk):
  proc = _start(tiny_disk / 'run', extra=['--config.num_train_steps=8',
                                          '--config.checkpoint_every_steps=2'])
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2, out[-3000:]
  assert 'CheckpointWriteError: Writing a checkpoint to' in out
  assert 'No space left on device' in out
  assert 'no checkpoint was complete yet' in out
  assert not _steps(tiny_disk / 'run')  # nothing half-written counts
  # Neither Orbax's reports of the failed write (tensorstore's
  # RESOURCE_EXHAUSTED) nor asyncio's "Event loop is closed" from
  # tensorstore's threads print a traceback before that line.
  assert 'Traceback' not in out, out[-3000:]


def test_read_only_checkpoints_dir_fails_within_seconds(tmp_path):
  """Orbax's background save fails; the run says so and exits, no 300 s hang."""
  ckpts = tmp_path / 'run' / 'checkpoints'
  ckpts.mkdir(parents=True)
  done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs',
                         str(ckpts)], capture_output=True)
  if done.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {done.stderr.decode()[:200]}')
  try:
    proc = _start(tmp_path / 'run', extra=['--config.num_train_steps=8',
                                           '--config.checkpoint_every_steps=2'])
    seen, lines = None, []
    for line in proc.stdout:
      lines.append(line)
      if '] CheckpointWriteError: ' in line and seen is None:  # main's line
        seen = time.perf_counter()
        assert 'Read-only file system' in line
        assert 'no checkpoint was complete yet' in line
    proc.wait(timeout=300)
    assert seen is not None
    assert time.perf_counter() - seen < 10
    assert proc.returncode == 2
    # Orbax's own reports of the failed write keep their message, not their
    # 230 lines of traceback.
    assert 'Traceback' not in ''.join(lines)
    assert any('(traceback: --library_logs)' in l for l in lines)
  finally:
    subprocess.run(['umount', str(ckpts)], check=False)


def test_a_model_field_added_later_matches_its_neutral_value():
  """A checkpoint saved before model.stage_widths existed resumes under a
  config that leaves it at () (the same network), and not under one that
  sets it."""
  config = tiny.get_config()
  saved = config.to_dict()
  del saved['model']['stage_widths']
  assert checkpointing.config_mismatches(saved, config) == []
  config.model.stage_widths = (8, 16, 32, 64)
  assert checkpointing.config_mismatches(saved, config) == [
      'model.stage_widths: checkpoint (), this run (8, 16, 32, 64)']
  config.model.stage_widths = ()
  config.model.width = 16
  assert [m.split(':')[0] for m in
          checkpointing.config_mismatches(saved, config)] == ['model.width']


def test_a_saved_config_without_new_fields_reopens_itself():
  """A checkpoint's own config, from before model.head_init existed, read
  back as the run's config (knn_eval, export) matches itself; and the
  heads' initialisation, which a restored state overwrites, never blocks a
  resume (a run begun with Flax's init resumes under today's default)."""
  saved = tiny.get_config().to_dict()
  for field in default.MODEL_FIELDS_ADDED_LATER:
    del saved['model'][field]
  assert checkpointing.config_mismatches(
      saved, ml_collections.ConfigDict(saved)) == []
  config = tiny.get_config()
  assert config.model.head_init == 'torch'
  assert checkpointing.config_mismatches(saved, config) == []
  config.model.head_init = 'flax'
  assert checkpointing.config_mismatches(saved, config) == []


def test_a_second_training_on_a_live_workdir_is_refused(straight, tmp_path):
  """The first run's checkpoints stay its own: equal to an unbroken run."""
  workdir = tmp_path / 'run'
  first = _start(workdir)
  lines = []
  for line in first.stdout:
    lines.append(line)
    if f'step 10/{NUM_STEPS}' in line:
      break
  second = _start(workdir)
  out2, _ = second.communicate(timeout=300)
  out1, _ = first.communicate(timeout=300)
  assert second.returncode == 2, out2[-3000:]
  assert f'is in use by pid {first.pid}' in out2
  assert first.returncode == 0, (''.join(lines) + out1)[-3000:]
  state = _restore(workdir)
  assert int(state.step) == NUM_STEPS
  _assert_trees(state.params, straight.params, exact=True)
  _assert_trees(state.opt_state, straight.opt_state, exact=True)


def test_sigterm_before_the_first_step_is_a_preemption(tmp_path):
  """Stopped while it starts (compiling, nothing to save): exit 75, not 143."""
  proc = _start(tmp_path / 'run')
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if 'Config:' in line:  # after the checks, long before step 1
      proc.send_signal(signal.SIGTERM)
      break
  out, _ = proc.communicate(timeout=300)
  out = ''.join(lines) + out
  assert proc.returncode == preemption.PREEMPTED_EXIT_CODE, out[-3000:]
  assert 'SIGTERM during start-up' in out
  assert 'Traceback' not in out
  assert 'First step' not in out


@pytest.mark.parametrize('content', ['{"params/backbone', '[]', ''])
def test_an_unreadable_digest_file_is_replaced_not_fatal(interrupted,
                                                         tmp_path, content,
                                                         caplog):
  workdir = tmp_path / 'run'
  shutil.copytree(interrupted[0], workdir)
  (good,) = _steps(workdir)
  digests = workdir / 'checkpoints' / f'{good}.digests.json'
  want = json.loads(digests.read_text())
  digests.write_text(content)  # truncated, implausible, empty
  with caplog.at_level('WARNING'):
    state = _restore(workdir)
  assert int(state.step) == good
  assert f'digests of the checkpoint of step {good} are unreadable' in (
      caplog.text)
  # Moved aside, and written again from the restored arrays: the same.
  assert json.loads(digests.read_text()) == want
  (aside,) = (workdir / 'checkpoints').glob(f'{good}.digests.json.corrupt-*')
  assert aside.read_text() == content


def test_a_truncated_config_json_resumes_from_the_checkpoint_config(
    interrupted, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(interrupted[0], workdir)
  text = (workdir / 'config.json').read_text()
  (workdir / 'config.json').write_text(text[:len(text) // 2])
  # Another model is still refused (the checkpoint's config says so), and
  # nothing is written.
  proc = _start(workdir, extra=['--config.model.width=16'])
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2, out[-3000:]
  assert 'model.width: saved 8, now 16' in out.splitlines()[-1]
  assert (workdir / 'config.json').read_text() == text[:len(text) // 2]
  # The run's own config resumes it; the truncated file is kept aside.
  code, out = _run(workdir)
  assert code == 0, out[-3000:]
  assert 'config.json is unreadable' in out
  assert json.loads((workdir / 'config.json').read_text())['model'][
      'width'] == 8
  (aside,) = workdir.glob('config.json.corrupt-*')
  assert aside.read_text() == text[:len(text) // 2]


def test_config_json_and_every_checkpoint_config_unreadable_is_one_line(
    interrupted, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(interrupted[0], workdir)
  (workdir / 'config.json').write_text('{')
  for meta in (workdir / 'checkpoints').glob('*/config/metadata'):
    meta.write_text('')
  proc = _start(workdir)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2, out[-3000:]
  last = out.strip().splitlines()[-1]
  assert 'config.json is unreadable' in last
  assert 'restore config.json, or move the checkpoints away' in last
  assert (workdir / 'config.json').read_text() == '{'


def test_a_model_change_is_refused_under_allow_changes_and_writes_nothing(
    interrupted, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(interrupted[0], workdir)
  files = lambda: {p.name: p.read_bytes() for p in workdir.iterdir()
                   if p.is_file() and p.name != '.lock'}  # the lock: who holds it
  before = files()
  proc = _start(workdir, extra=['--config.model.width=16',
                                '--config.resume_policy=allow_changes'])
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2, out[-3000:]
  last = out.strip().splitlines()[-1]
  assert 'holds checkpoints of another model: model.width: saved 8, now 16' in last
  assert 'Nothing was written' in last
  assert files() == before  # config.json and config_history.jsonl untouched
