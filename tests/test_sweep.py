"""The recipe sweep runner: run specs, the table, resuming."""

import json
import os
import subprocess
import sys

import pytest

from simsiam_jax.experiments import sweep

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_specs_and_seeds():
  assert sweep.parse_run('base') == ('base', [])
  assert sweep.parse_run('lr03 optim.base_lr=0.3 seed=2') == (
      'lr03', ['--config.optim.base_lr=0.3', '--config.seed=2'])
  with pytest.raises(ValueError, match='NAME FIELD=VALUE'):
    sweep.parse_run('lr03 optim.base_lr')
  with pytest.raises(ValueError, match='NAME FIELD=VALUE'):
    sweep.parse_run('a/b')
  assert sweep.expand(['a x=1'], 2) == [
      ('a_s0', ['--config.x=1', '--config.seed=0']),
      ('a_s1', ['--config.x=1', '--config.seed=1'])]


def _write_summary(out, name, **values):
  os.makedirs(out / name)
  (out / name / 'summary.json').write_text(json.dumps(values))


def test_table_has_baselines_and_each_runs_values(tmp_path):
  _write_summary(tmp_path, 'a', knn_top1=0.8, knn_raw_pixels=0.75,
                 knn_random_init=0.5, feature_rank=12.5,
                 feature_rank_raw_pixels=300.0, feature_rank_random_init=90.0)
  text = sweep.table(str(tmp_path), [('a', ['--config.x=1']), ('b', [])])
  lines = text.splitlines()
  raw = next(l for l in lines if l.startswith('| (raw pixels)'))
  assert '75.00' in raw and '300.00' in raw
  a = next(l for l in lines if l.startswith('| a |'))
  assert '`x=1`' in a and '| done |' in a and '80.00' in a and '12.50' in a
  assert next(l for l in lines if l.startswith('| b |')).count('pending') == 1


def test_runs_and_skips_what_finished(tmp_path):
  command = [sys.executable, '-m', 'simsiam_jax.experiments.sweep',
             f'--out={tmp_path}', '--config=configs/tiny.py',
             '--run=t knn.every_epochs=0 knn.k=5 eval.batch_size=64']
  env = {**os.environ, 'PYTHONPATH': REPO_ROOT}
  subprocess.run(command, cwd=REPO_ROOT, env=env, check=True,
                 capture_output=True)
  summary = json.loads((tmp_path / 't' / 'summary.json').read_text())
  assert summary['step'] == 4 and 'feature_rank' in summary
  row = next(l for l in (tmp_path / 'sweep.md').read_text().splitlines()
             if l.startswith('| t |'))
  assert f'{100 * summary["knn_top1"]:.2f}' in row
  mtime = os.path.getmtime(tmp_path / 't' / 'summary.json')
  again = subprocess.run(command, cwd=REPO_ROOT, env=env, check=True,
                         capture_output=True, text=True)
  assert 't: done' in again.stdout
  assert os.path.getmtime(tmp_path / 't' / 'summary.json') == mtime
