"""The command line, end to end, as a user runs it (subprocesses)."""

import glob
import json
import os
import subprocess
import sys

import pytest

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
  run (with its kNN monitor) still completes; metrics fall back to log + JSONL."""
  result = subprocess.run(
      [sys.executable, '-c', BLOCK_TF, '--config=configs/tiny.py',
       f'--workdir={tmp_path}', '--config.data.augment_on=device',
       '--config.data.resident=True', '--config.knn.every_epochs=0',
       '--config.knn.batch_size=64', '--config.knn.k=20'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
      env=os.environ.copy())
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'TensorBoard events not written' in result.stderr
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['step'] == 4 and summary['knn_top1'] > 0.5
  assert (tmp_path / 'metrics.jsonl').read_text().count('"loss"') == 2


def test_cli_unwritable_workdir_is_one_clear_error(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  result = _run('--config=configs/tiny.py', f'--workdir={blocker}/run',
                timeout=120)
  assert result.returncode == 2
  assert 'WorkdirError: Cannot write to workdir' in result.stderr
  assert 'Traceback' not in result.stderr
