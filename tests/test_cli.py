"""The command line, end to end, as a user runs it (subprocesses)."""

import glob
import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from tests import fmnist_files
from tests.conftest import REPO_ROOT


def _run(*args, timeout=300):
  return subprocess.run(
      [sys.executable, '-m', 'simsiam_jax.main', *args], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('tiny')
  result = _run('--config=configs/tiny.py', f'--workdir={workdir}',
                '--config.num_train_steps=6', '--config.log_every_steps=3')
  return result, workdir


def test_cli_trains_and_writes_summary_and_events(tiny_run):
  result, workdir = tiny_run
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['step'] == 6
  assert -1 <= summary['loss'] <= 1
  assert summary['images_per_sec'] > 0
  assert 'collapse_std' in summary
  assert glob.glob(str(workdir / 'events.out.tfevents.*'))
  # The progress line a user watches.
  assert 'img/s' in result.stderr and 'ETA' in result.stderr
  # ...without the libraries' INFO chatter around it (Orbax's checkpoint
  # manager, clu's metric writer): --library_logs brings it back.
  assert 'checkpoint_manager.py' not in result.stderr
  assert 'logging_writer.py' not in result.stderr
  assert '8 global devices' in result.stderr
  assert json.loads((workdir / 'config.json').read_text())['batch_size'] == 16


def test_cli_rejects_unknown_config_field(tmp_path):
  result = _run('--config=configs/tiny.py', f'--workdir={tmp_path}',
                '--config.batch_sise=32', timeout=120)
  assert result.returncode != 0
  assert 'batch_sise' in result.stderr


def test_cli_rejects_indivisible_batch(tmp_path):
  result = _run('--config=configs/tiny.py', f'--workdir={tmp_path}',
                '--config.batch_size=12', timeout=120)
  assert result.returncode != 0
  assert 'not divisible by the 8 devices' in result.stderr
  assert not os.path.exists(tmp_path / 'summary.json')


# As on a machine without TensorFlow: `import tensorflow` fails and
# importlib.util.find_spec('tensorflow') is None.
BLOCK_TF = '''
import sys
sys.modules['tensorflow'] = None
from absl import app
from simsiam_jax import main
app.run(main.main)
'''


def test_trainer_runs_without_tensorflow(tmp_path):
  """Resident data augmented on the device: importing TensorFlow fails, the
  run (with its kNN monitor) still completes; metrics fall back to log + JSONL.

  On real Fashion-MNIST images (a subset of Debian's files, read without
  TensorFlow) where installed, else on the synthetic source.
  """
  data = ['--config.knn.k=20']
  if fmnist_files.debian_available():
    manual = tmp_path / 'manual'
    manual.mkdir()
    fmnist_files.write_debian_subset(manual, 1024, 256)
    data = ['--config.data.dataset=fashion_mnist_debian',
            f'--config.data.manual_dir={manual}', '--config.data.image_size=28']
  result = subprocess.run(
      [sys.executable, '-c', BLOCK_TF, '--config=configs/tiny.py',
       f'--workdir={tmp_path}/run', '--config.data.augment_on=device',
       '--config.data.resident=True', '--config.knn.every_epochs=0',
       '--config.eval.batch_size=128', '--config.batch_size=64', *data],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
      env=os.environ.copy())
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'TensorBoard events not written' in result.stderr
  summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
  assert summary['step'] == 4 and np.isfinite(summary['loss'])
  # Features of labelled images against their labels: far above chance (0.1).
  assert summary['knn_top1'] > 0.4
  assert (tmp_path / 'run' / 'metrics.jsonl').read_text().count('"loss"') == 2


def test_cli_unwritable_workdir_is_one_clear_error(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  result = _run('--config=configs/tiny.py', f'--workdir={blocker}/run',
                timeout=120)
  assert result.returncode == 2
  assert 'WorkdirError: Cannot write to workdir' in result.stderr
  assert 'Traceback' not in result.stderr


def test_library_info_lines_are_dropped_but_not_their_warnings():
  import logging  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from simsiam_jax import main  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  keep = main._OwnInfoOnly().filter  # pylint: disable=protected-access
  ours = os.path.join(REPO_ROOT, 'simsiam_jax', 'train.py')
  orbax = '/venv/site-packages/orbax/checkpoint/checkpoint_manager.py'

  def record(path, level):
    return logging.LogRecord('absl', level, path, 1, 'msg', None, None)

  assert keep(record(ours, logging.INFO))
  assert not keep(record(orbax, logging.INFO))
  assert keep(record(orbax, logging.WARNING))
  assert keep(record(orbax, logging.ERROR))


def test_library_storage_errors_lose_their_traceback_only():
  import logging  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from simsiam_jax import main  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  keep = main._OwnInfoOnly().filter  # pylint: disable=protected-access
  orbax = '/venv/site-packages/orbax/checkpoint/checkpoint_manager.py'

  def failed_with(error):
    try:
      raise error
    except Exception:  # pylint: disable=broad-except
      return logging.LogRecord('absl', logging.ERROR, orbax, 1, 'Save failed.',
                               None, sys.exc_info())

  chained = RuntimeError('commit failed')  # raise ... from PermissionError
  chained.__cause__ = PermissionError('read-only')
  for error in (OSError('No space left on device'),
                ValueError('RESOURCE_EXHAUSTED: Error writing "x/0"'),
                chained):
    rec = failed_with(error)
    assert keep(rec) and rec.exc_info is None
    assert rec.getMessage() == 'Save failed. (traceback: --library_logs)'
  # A library's own bug keeps its traceback.
  rec = failed_with(ValueError('shapes do not match'))
  assert keep(rec) and rec.exc_info is not None


def test_closed_event_loop_reports_are_dropped_and_nothing_else():
  from simsiam_jax import main  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  seen, unraisable = [], []
  excepthook, unraisablehook = main._quiet_closed_event_loops(  # pylint: disable=protected-access
      lambda kind, value, tb: seen.append(value),
      lambda args: unraisable.append(args.exc_value))

  def args(e):  # what Python passes to sys.unraisablehook
    return types.SimpleNamespace(exc_type=type(e), exc_value=e,
                                 exc_traceback=None, err_msg=None, object=None)

  closed = RuntimeError('Event loop is closed')
  excepthook(RuntimeError, closed, None)
  unraisablehook(args(closed))
  assert not seen and not unraisable
  for other in (RuntimeError('Event loop is running'), ValueError('x')):
    excepthook(type(other), other, None)
    unraisablehook(args(other))
  assert [str(e) for e in seen] == ['Event loop is running', 'x']
  assert [str(e) for e in unraisable] == ['Event loop is running', 'x']


@pytest.mark.parametrize('args,message', [
    (['--config.batch_sise=32'],
     "no config field 'batch_sise'. Did you mean \"batch_size\""),
    (['--config.batch_size=abc'], 'invalid literal'),
    (['--config.batch_size=12'], 'not divisible by the 8 devices'),
    (['--config.data.synthetic_num_examples=8'],
     'larger than the training split (8 examples)'),
    (['--config.model.depth=19'], 'model.depth must be one of'),
    (['--config.optim.base_lr=-0.1'], 'optim.base_lr must be > 0'),
    (['--config.data.image_size=0'], 'data.image_size must be > 0'),
    (['--config.mode=train'], 'config.mode must be one of'),
    (['--config.data.augment_on=gpu'], 'data.augment_on must be one of'),
    (['--config.resume_policy=maybe'], 'resume_policy must be one of'),
    (['--config.mode=knn_eval', '--config.pretrained.workdir=/nonexistent'],
     'No checkpoints/ in'),
    (['--config.log_every_steps=0'], 'log_every_steps must be > 0'),
    (['--config.checkpoint_every_steps=0'], 'checkpoint_every_steps must be > 0'),
    (['--config.data.dataset=no_such_set', '--config.data.resident=False'],
     "Unknown dataset 'no_such_set'"),
    (['stray'], 'Unexpected arguments: stray'),
    (['--config=configs/no_such.py'], 'no file'),
    (['--workdir='], "--workdir is required (mode 'pretrain')"),
    (['--config.method=swav', '--config.model.predictor=none'],
     "method 'swav' needs prototypes: add --config.model.prototypes=K"),
    (['--config.method=moco_v2'], "method 'moco_v2' has no predictor"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
  result = _run('--config=configs/tiny.py', f'--workdir={tmp_path}/run', *args,
                timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  # The error is the last line: the config dump comes only after the checks.
  assert message in result.stderr.strip().splitlines()[-1], result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'run' / 'summary.json')


@pytest.mark.parametrize('text,message', [
    ('def get_config(:\n  pass\n', 'bad.py, line 1: invalid syntax'),
    ('import no_such_module\n', "No module named 'no_such_module'"),
])
def test_a_config_file_that_does_not_load_is_one_line(tmp_path, text, message):
  (tmp_path / 'bad.py').write_text(text)
  result = _run(f'--config={tmp_path / "bad.py"}', f'--workdir={tmp_path}/run',
                timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines() == [
      l for l in result.stderr.strip().splitlines() if message in l]
  assert not os.path.exists(tmp_path / 'run')


def test_bad_pretrained_step_lists_the_steps(tiny_run, tmp_path):
  _, workdir = tiny_run
  result = _run('--config=configs/tiny.py', f'--workdir={tmp_path}',
                '--config.mode=knn_eval', f'--config.pretrained.workdir={workdir}',
                '--config.pretrained.step=5', timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'pretrained.step=5' in result.stderr
  assert 'it has steps [2, 4, 6]' in result.stderr


@pytest.mark.skipif(importlib.util.find_spec('torch') is None,
                    reason='export needs PyTorch')
@pytest.mark.parametrize('bad,message', [
    ({'--out': '/nonexistent/dir/x.pth'}, 'folder /nonexistent/dir does not'),
    ({'--workdir': '/nonexistent'}, "No checkpoints/ in '/nonexistent'"),
])
def test_export_bad_input_is_one_line_and_exit_2(tiny_run, tmp_path, bad,
                                                 message):
  _, workdir = tiny_run
  flags = {'--workdir': str(workdir), '--out': str(tmp_path / 'x.pth'), **bad}
  result = subprocess.run(
      [sys.executable, '-m', 'simsiam_jax.export',
       *(f'{k}={v}' for k, v in flags.items())], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=120, env=os.environ.copy())
  assert result.returncode == 2, result.stderr[-3000:]
  assert message in result.stderr
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'x.pth')


def test_plot_of_no_run_is_one_line_and_exit_2(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'simsiam_jax.plot',
       f'--workdir={tmp_path}/none'], cwd=REPO_ROOT, capture_output=True,
      text=True, timeout=120, env=os.environ.copy())
  assert result.returncode == 2
  assert 'no metrics.jsonl in' in result.stderr
  assert not os.path.exists(tmp_path / 'none')  # nothing created
