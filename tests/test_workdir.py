"""The workdir: one owner, resume means the same run, sane states, read-only readers."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from configs import tiny
from simsiam_jax import backbone as backbone_lib
from simsiam_jax.models import resnet
from simsiam_jax import train
from simsiam_jax import workdir as workdir_lib
from tests.conftest import REPO_ROOT
from tests.conftest import hold_workdir


def test_a_held_workdir_is_refused_naming_its_holder(tmp_path):
  holder = hold_workdir(tmp_path)
  try:
    with pytest.raises(workdir_lib.WorkdirLocked,
                       match=f'in use by pid {holder.pid} on '):
      workdir_lib.claim(str(tmp_path))
  finally:
    holder.kill()
    holder.wait()
  # The kernel dropped the lock with its holder: never a stale lock.
  workdir_lib.claim(str(tmp_path))
  workdir_lib.claim(str(tmp_path))  # again from the same process: a no-op


def test_other_processes_check_the_run_id_in_the_lock(tmp_path):
  run_id = workdir_lib.claim(str(tmp_path))
  assert run_id == workdir_lib.claim(str(tmp_path))  # same claim, same id
  assert json.loads((tmp_path / '.lock').read_text())['run_id'] == run_id
  workdir_lib.check_owner(str(tmp_path), run_id)
  with pytest.raises(workdir_lib.WorkdirError, match='same shared --workdir'):
    workdir_lib.check_owner(str(tmp_path), run_id + 1)  # another run's lock
  with pytest.raises(workdir_lib.WorkdirError, match='reads None'):
    workdir_lib.check_owner(str(tmp_path / 'elsewhere'), run_id)  # no lock
  workdir_lib.check_owner('gs://bucket/run', 0)  # not locked: nothing to check


def test_cli_on_a_held_workdir_stops_at_once_and_writes_nothing(tmp_path):
  (tmp_path / 'config.json').write_text('{"a run": "of its own"}')
  holder = hold_workdir(tmp_path)
  try:
    t = time.perf_counter()
    result = subprocess.run(
        [sys.executable, '-m', 'simsiam_jax.main', '--config=configs/tiny.py',
         f'--workdir={tmp_path}', '--config.num_train_steps=4'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t
  finally:
    holder.kill()
    holder.wait()
  assert result.returncode == 2, result.stderr[-3000:]
  assert f'in use by pid {holder.pid}' in result.stderr
  assert 'Traceback' not in result.stderr
  assert wall < 120  # start-up only: nothing compiled or trained
  assert (tmp_path / 'config.json').read_text() == '{"a run": "of its own"}'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['.lock',
                                                        'config.json']


def _started_run(path, config):
  """A workdir as a run leaves it after its first checkpoint."""
  workdir_lib.prepare(str(path), config)
  (path / 'checkpoints' / '2').mkdir(parents=True)


def _history(path):
  return [json.loads(l) for l in
          (path / workdir_lib.HISTORY_FILE).read_text().splitlines()]


@pytest.mark.parametrize('field,value', [
    ('seed', 1), ('batch_size', 32), ('data.aug.brightness', 0.8),
    ('optim.base_lr', 0.1), ('optim.schedule', 'constant'),
    ('loss.stop_gradient', False), ('num_epochs', 0.01)])
def test_resume_with_other_settings_is_refused_before_writing(
    tmp_path, field, value):
  config = tiny.get_config()
  _started_run(tmp_path, config)
  saved = (tmp_path / 'config.json').read_text()
  changed = config.copy_and_resolve_references()
  section, _, name = field.rpartition('.')
  target = changed
  for part in section.split('.') if section else ():
    target = target[part]
  target[name] = value
  with pytest.raises(workdir_lib.ResumeRefused, match=f'{field}: saved '):
    workdir_lib.prepare(str(tmp_path), changed)
  assert (tmp_path / 'config.json').read_text() == saved
  assert [h['event'] for h in _history(tmp_path)] == ['start']

  # Allowed when asked for, and recorded.
  with changed.unlocked():
    changed.resume_policy = 'allow_changes'
  workdir_lib.prepare(str(tmp_path), changed)
  last = _history(tmp_path)[-1]
  assert last['event'] == 'resume' and last['policy'] == 'allow_changes'
  assert any(c.startswith(f'{field}: saved ') for c in last['changed'])
  assert json.loads((tmp_path / 'config.json').read_text())[
      'resume_policy'] == 'allow_changes'


def test_safe_changes_and_longer_runs_resume(tmp_path):
  config = tiny.get_config()
  _started_run(tmp_path, config)
  other = config.copy_and_resolve_references()
  other.log_every_steps = 7
  other.checkpoint_every_steps = 9
  other.knn.every_epochs = 3
  other.num_epochs = config.num_epochs + 1
  workdir_lib.prepare(str(tmp_path), other)
  assert len(_history(tmp_path)[-1]['changed']) == 4
  assert json.loads((tmp_path / 'config.json').read_text())[
      'log_every_steps'] == 7


def test_a_model_field_the_saved_run_lacks_is_compared_at_its_old_value(
    tmp_path):
  """A run saved before model.prototypes existed built no prototypes: it
  resumes with prototypes=0, and a run that sets them is refused as another
  model before anything is written, whatever the resume policy."""
  config = tiny.get_config()
  _started_run(tmp_path, config)
  saved = json.loads((tmp_path / 'config.json').read_text())
  del saved['model']['prototypes']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  workdir_lib.prepare(str(tmp_path), config)  # prototypes=0: the same network
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  other = config.copy_and_resolve_references()
  other.model.prototypes = 30
  other.resume_policy = 'allow_changes'
  with pytest.raises(workdir_lib.ResumeRefused, match=(
      'another model: model.prototypes: saved 0, now 30')):
    workdir_lib.prepare(str(tmp_path), other)
  assert json.loads((tmp_path / 'config.json').read_text()) == saved
  assert len(_history(tmp_path)) == 2


def test_a_fresh_workdir_takes_any_config(tmp_path):
  workdir_lib.prepare(str(tmp_path), tiny.get_config())
  other = tiny.get_config()
  other.seed = 5
  workdir_lib.prepare(str(tmp_path), other)  # no checkpoint yet: a new run
  assert [h['event'] for h in _history(tmp_path)] == ['start', 'start']


def test_a_start_killed_in_its_first_save_left_nothing_to_resume(tmp_path):
  workdir_lib.prepare(str(tmp_path), tiny.get_config())
  (tmp_path / 'checkpoints' / '2.orbax-checkpoint-tmp-1234').mkdir(
      parents=True)
  other = tiny.get_config()
  other.seed = 5
  workdir_lib.prepare(str(tmp_path), other)  # accepted: a fresh start
  assert json.loads((tmp_path / 'config.json').read_text())['seed'] == 5
  (tmp_path / 'checkpoints' / '2').mkdir()  # a completed checkpoint
  other.seed = 6
  with pytest.raises(workdir_lib.ResumeRefused, match='seed'):
    workdir_lib.prepare(str(tmp_path), other)


@pytest.mark.parametrize('lr', [1e6, 1e30])
def test_a_diverging_run_stops_before_saving_what_diverged(tmp_path, lr):
  config = tiny.get_config()
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.optim.base_lr = lr
  with pytest.raises(FloatingPointError,
                     match='parameters diverged|Loss is') as e:
    train.train_and_evaluate(config, str(tmp_path))
  message = str(e.value)
  assert 'not saved' in message
  # Whatever was saved passed the check the message names.
  saved = sorted(int(d.name) for d in (tmp_path / 'checkpoints').iterdir()
                 if d.name.isdigit())
  if saved:
    assert f'step {saved[-1]} in' in message
  else:
    assert 'no checkpoint was saved yet' in message
  assert not (tmp_path / workdir_lib.SUMMARY_FILE).exists()


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('finished')
  config = tiny.get_config()
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  summary = train.train_and_evaluate(config, str(workdir))
  return config, workdir, summary


def test_a_finished_run_run_again_leaves_its_summary(finished_run):
  config, workdir, summary = finished_run
  path = workdir / workdir_lib.SUMMARY_FILE
  before = (path.read_bytes(), os.path.getmtime(path))
  assert train.train_and_evaluate(config, str(workdir)) == summary
  assert (path.read_bytes(), os.path.getmtime(path)) == before


def _snapshot(root):
  return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(root.rglob('*'))}


def test_export_reads_without_touching_the_workdir(finished_run):
  _, workdir, summary = finished_run
  # An in-flight save of a live run: a reader must not clean it away.
  (workdir / 'checkpoints' / '6.orbax-checkpoint-tmp-1234').mkdir()
  before = _snapshot(workdir)
  module, variables = backbone_lib.load_backbone(str(workdir))
  assert backbone_lib.load_backbone(str(workdir)).step == summary['step'] == 4
  assert isinstance(module, resnet.ResNet)
  assert np.isfinite(float(optax.global_norm(variables['params'])))
  assert jax.tree.leaves(variables['batch_stats'])
  assert _snapshot(workdir) == before


def _four_steps_signalled():
  """tiny for 4 steps, kNN at the end only; skips where no handler can go."""
  import threading  # pylint: disable=g-import-not-at-top
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('signal handlers need the main thread')
  config = tiny.get_config()
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.knn.every_epochs = 0  # kNN at the end only
  config.knn.baselines = False
  return config


def test_sigterm_in_the_final_evaluation_is_a_preemption(tmp_path,
                                                         monkeypatch):
  from simsiam_jax import preemption  # pylint: disable=g-import-not-at-top
  from simsiam_jax.evaluation import monitor  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  config = _four_steps_signalled()

  def sigterm_then_score(self, state):
    del self, state
    os.kill(os.getpid(), signal.SIGTERM)  # the scheduler stops the job
    time.sleep(30)
    return 0.5

  real = monitor.KnnMonitor.__call__
  monkeypatch.setattr(monitor.KnnMonitor, '__call__', sigterm_then_score)
  with pytest.raises(preemption.Preempted, match='final evaluation'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / workdir_lib.SUMMARY_FILE).exists()
  # The rerun finishes the evaluation from the last checkpoint, and its
  # summary still has the training statistics.
  monkeypatch.setattr(monitor.KnnMonitor, '__call__', real)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['step'] == 4 and 0 <= summary['knn_top1'] <= 1
  assert 'loss' in summary and 'collapse_std' in summary


def _restored(workdir, config):
  from simsiam_jax import checkpointing, parallel, optim, state as state_lib  # pylint: disable=g-import-not-at-top,multiple-imports
  from simsiam_jax.models import simsiam  # pylint: disable=g-import-not-at-top
  model = simsiam.create_model(config.model)
  tx, _ = optim.create_optimizer(config, 1, 1 << 30)
  abstract = state_lib.abstract(
      state_lib.simsiam_initializer(model, tx, (16, 16, 3)),
      parallel.create_mesh(), jax.random.key(0))
  return checkpointing.Checkpointer(str(workdir), config).restore(abstract)


def _flip_a_byte(step_dir):
  """One bit of the largest array file of a checkpoint, in place."""
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file()]
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 0x01
  target.write_bytes(bytes(data))


def test_a_corrupt_latest_checkpoint_is_moved_aside_and_redone(finished_run,
                                                               tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  config, unbroken, _ = finished_run
  broken = tmp_path / 'broken'
  assert (unbroken / 'checkpoints' / '4.digests.json').exists()
  shutil.copytree(unbroken, broken)
  (broken / workdir_lib.SUMMARY_FILE).unlink()
  _flip_a_byte(broken / 'checkpoints' / '4')
  # The flipped bit is caught (by Orbax or by the digests): step 2 restores,
  # step 4 is moved aside, and the rerun saves step 4 again.
  summary = train.train_and_evaluate(config, str(broken))
  assert summary['step'] == 4
  names = {p.name for p in (broken / 'checkpoints').iterdir()}
  assert '4' in names and any(n.startswith('4.corrupt-') for n in names)
  a, b = _restored(unbroken, config), _restored(broken, config)
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state, a.batch_stats)),
                  jax.tree.leaves((b.params, b.opt_state, b.batch_stats))):
    np.testing.assert_array_equal(x, y)


def test_digests_catch_what_orbax_reads_back_changed(finished_run, tmp_path):
  """A checkpoint that restores, but not to what was saved, is corrupt."""
  import shutil  # pylint: disable=g-import-not-at-top
  config, workdir, _ = finished_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  digests = tmp_path / 'checkpoints' / '4.digests.json'
  saved = json.loads(digests.read_text())
  key = sorted(k for k in saved if 'params' in k)[0]
  digests.write_text(json.dumps({**saved, key: '0' * 64}))
  state = _restored(tmp_path, config)
  assert int(state.step) == 2
  assert any(p.name.startswith('4.corrupt-')
             for p in (tmp_path / 'checkpoints').iterdir())


def test_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'config.json'
  workdir_lib.write_atomic(path, 'old')
  assert path.read_text() == 'old'

  def fail(self, target):
    raise OSError('disk gone')

  monkeypatch.setattr(type(epath.Path(tmp_path)), 'replace', fail)
  with pytest.raises(OSError, match='disk gone'):
    workdir_lib.write_atomic(path, 'new, cut short')
  # The old content stays, and no temporary file is left behind.
  assert path.read_text() == 'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['config.json']


def test_a_resumed_run_logs_each_step_once(tmp_path):
  """Rows written after the last checkpoint by an interrupted attempt go."""
  from simsiam_jax import metrics_io  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.num_train_steps = 4
  train.train_and_evaluate(config, str(tmp_path))
  # An attempt that went on to step 6 and was killed before saving it.
  with open(tmp_path / metrics_io.METRICS_FILE, 'a') as f:
    f.write(json.dumps({'step': 6, 'loss': 9.0}) + '\n')
  config.num_train_steps = 8
  train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in metrics_io.read_metrics(str(tmp_path)) if 'loss' in r]
  assert [r['step'] for r in rows] == [2, 4, 6, 8]
  assert rows[2]['loss'] != 9.0


def test_a_reader_takes_the_next_checkpoint_when_its_pick_rotates_away(
    finished_run, tmp_path, monkeypatch):
  """A live run may delete the checkpoint a reader picked before it reads it."""
  import shutil  # pylint: disable=g-import-not-at-top
  from simsiam_jax import checkpointing  # pylint: disable=g-import-not-at-top
  _, workdir, _ = finished_run
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  (copy / '.lock').unlink(missing_ok=True)
  original = checkpointing.Checkpointer.restore
  rotated = []

  def restore_after_rotation(self, abstract_state, step=None):
    if not rotated:  # the run saved on and rotated the picked step away
      rotated.append(step)
      shutil.rmtree(copy / 'checkpoints' / str(step))
    return original(self, abstract_state, step)

  monkeypatch.setattr(checkpointing.Checkpointer, 'restore',
                      restore_after_rotation)
  loaded = backbone_lib.load_backbone(str(copy))
  assert rotated == [4] and loaded.step == 2


def test_sigterm_after_the_last_step_check_is_a_preemption(tmp_path,
                                                           monkeypatch):
  """Once logged and then ignored: now exit 75 after the last save."""
  from simsiam_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from simsiam_jax import preemption  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  config = _four_steps_signalled()
  real_save = checkpointing.Checkpointer.save

  def save_then_sigterm(self, step, state, force=False):
    saved = real_save(self, step, state, force=force)
    if step == 4:  # the last step: its stop check has passed
      os.kill(os.getpid(), signal.SIGTERM)
    return saved

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save_then_sigterm)
  with pytest.raises(preemption.Preempted,
                     match='after the last step: saved step 4'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / workdir_lib.SUMMARY_FILE).exists()
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', real_save)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['step'] == 4 and 0 <= summary['knn_top1'] <= 1


def test_a_run_resumed_inside_a_log_window_records_what_a_straight_one_does(
    tmp_path):
  """The window's steps before the checkpoint are kept beside it."""
  import shutil  # pylint: disable=g-import-not-at-top
  from simsiam_jax import metrics_io  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.num_train_steps = 8
  config.log_every_steps = 4
  config.checkpoint_every_steps = 2
  config.knn.baselines = False
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train.train_and_evaluate(config, str(straight))
  assert (straight / 'checkpoints' / '6.window.json').exists()
  assert not (straight / 'checkpoints' / '8.window.json').exists()
  # Stopped after its save at step 6, in the middle of the window 5-8.
  shutil.copytree(straight, resumed)
  shutil.rmtree(resumed / 'checkpoints' / '8')
  (resumed / 'checkpoints' / '8.digests.json').unlink()
  (resumed / 'summary.json').unlink()
  train.train_and_evaluate(config, str(resumed))

  def records(workdir):
    rows = [r for r in metrics_io.read_metrics(str(workdir)) if 'loss' in r]
    return [(r['step'], r['loss'], r['grad_norm'], r['collapse_std'])
            for r in rows]
  assert [r[0] for r in records(resumed)] == [4, 8]
  assert records(resumed) == records(straight)
  a, b = (json.loads((d / 'summary.json').read_text())
          for d in (straight, resumed))
  for k in ('loss', 'grad_norm', 'collapse_std', 'step'):
    assert a[k] == b[k], k
