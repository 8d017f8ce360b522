"""The ablation table: rows, orderings, resuming, failures, real tiny runs."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from simsiam_jax import optim
from simsiam_jax import preemption
from simsiam_jax.experiments import ablations
from simsiam_jax.experiments import report
from simsiam_jax.experiments import runs as runs_lib
from tests.conftest import REPO_ROOT

NO_KNN_EVERY_EPOCH = ['knn.every_epochs=0']


# The paper's claims and the ordering logic, on hand-made numbers.

def test_claims_follow_the_papers_gaps():
  """'>' for a gap of 1 point or more, '>=' below, '~' for 0.1 or less."""
  for group, claims in ablations.CLAIMS.items():
    for left, op, right in claims:
      a, b = ablations.PAPER_TOP1[left], ablations.PAPER_TOP1[right]
      if b is None:  # BN 'all': "unstable" in the paper
        assert (group, op) == ('head_bn', '>')
        continue
      want = '~' if abs(a - b) <= 0.1 + 1e-9 else '>' if a - b >= 1 else '>='
      assert op == want, (left, op, right)
  rows = ablations.all_rows(ml_collections.ConfigDict(
      {'batch_size': 256, 'log_every_steps': 20, 'num_train_steps': -1}))
  assert {r.name for r in rows} == set(ablations.PAPER_TOP1)
  assert {r.group for r in rows} == set(ablations.GROUPS)


@pytest.mark.parametrize('left, op, right, tol, want', [
    (0.80, '>', 0.70, 0.02, 'holds'),
    (0.70, '>', 0.80, 0.02, 'does not hold'),
    (0.75, '>', 0.74, 0.02, 'tie'),      # inside the seed spread
    (0.74, '>', 0.75, 0.02, 'tie'),
    (0.75, '>', 0.74, 0.0, 'holds'),     # one seed: no spread
    (0.74, '>=', 0.75, 0.02, 'holds'),   # a tie satisfies '>='
    (0.70, '>=', 0.75, 0.02, 'does not hold'),
    (0.75, '~', 0.76, 0.02, 'holds'),
    (0.75, '~', 0.80, 0.02, 'does not hold'),
    (None, '>', 0.80, 0.02, 'n/a'),
])
def test_compare(left, op, right, tol, want):
  assert report.compare(left, op, right, tol) == want


def test_group_verdict_worst_wins():
  assert report.group_verdict(['holds', 'holds']) == 'holds'
  assert report.group_verdict(['holds', 'tie']) == 'tie'
  assert report.group_verdict(['tie', 'n/a']) == 'n/a'
  assert report.group_verdict(['n/a', 'does not hold', 'tie']) == (
      'does not hold')


def _rows(**means):
  rows = {name: {'probe_top1': report.aggregate([v]),
                 'knn_top1': report.aggregate([v])}
          for name, v in means.items()}
  seeds = [0.75, 0.77, 0.76]  # spread 0.02
  rows['baseline'] = {m: report.aggregate(seeds)
                      for m in ('probe_top1', 'knn_top1')}
  return rows


def test_orderings_against_the_baselines_seed_spread():
  assert report.aggregate([0.75, 0.77, 0.76]) == pytest.approx(
      {'mean': 0.76, 'spread': 0.02, 'n': 3})
  base = 0.76
  claims = {g: ablations.CLAIMS[g]
            for g in ('head_bn', 'stop_gradient', 'symmetric', 'batch')}
  res = report.evaluate_claims(_rows(
      head_bn_default=base, head_bn_hidden=0.755, head_bn_none=0.60,
      head_bn_all=0.50,                        # default >= hidden > none, > all
      stop_gradient=base, no_stop_gradient=0.10,
      symmetric=base, asymmetric=0.75,         # 1 point, within the spread
      batch_256=base, batch_512=0.80, batch_1024=0.765, batch_128=0.74,
      batch_64=0.73), claims)
  assert res['head_bn']['probe_top1'] == 'holds'
  assert res['stop_gradient']['probe_top1'] == 'holds'
  assert res['symmetric']['probe_top1'] == 'tie'
  batch = {c['claim']: c['probe_top1']['verdict']
           for c in res['batch']['claims']}
  assert batch == {'batch_256 ~ batch_512': 'does not hold',
                   'batch_256 ~ batch_1024': 'holds',
                   'batch_256 >= batch_128': 'holds',
                   'batch_128 > batch_64': 'tie'}
  assert res['batch']['probe_top1'] == 'does not hold'
  assert res['batch']['claims'][0]['probe_top1']['tolerance'] == (
      pytest.approx(0.02))
  # BN everywhere better than the default: Table 3's ordering is refuted.
  res = report.evaluate_claims(_rows(
      head_bn_default=base, head_bn_hidden=0.70, head_bn_none=0.60,
      head_bn_all=0.85), {'head_bn': ablations.CLAIMS['head_bn']})
  assert res['head_bn']['knn_top1'] == 'does not hold'
  # A group whose rows were not run is left out.
  assert report.evaluate_claims(_rows(), claims) == {}


# The plan: rows, overrides and commands, without running anything.

def test_plan_shares_the_baseline_and_scales_batch_rows():
  plan = ablations.make_plan('configs/fashion_mnist.py', [], [], 3)
  baseline = ['baseline_seed0', 'baseline_seed1', 'baseline_seed2']
  for row in ('baseline', 'stop_gradient', 'predictor_mlp', 'head_bn_default',
              'similarity_cosine', 'symmetric', 'batch_256'):
    assert plan.row_runs[row] == baseline, row
  assert list(plan.runs) == [
      'baseline_seed0', 'no_stop_gradient', 'predictor_none',
      'predictor_fixed_random', 'predictor_lr_decayed', 'head_bn_none',
      'head_bn_hidden', 'head_bn_all', 'similarity_cross_entropy',
      'asymmetric', 'batch_64', 'batch_128', 'batch_512', 'batch_1024',
      'baseline_seed1', 'baseline_seed2']
  assert plan.runs['predictor_lr_decayed'] == {'optim.fix_pred_lr': False}
  assert plan.runs['baseline_seed2'] == {'seed': 2}
  # Same epochs, logging as often per epoch (the demo logs every 20 steps
  # at batch 256).
  assert plan.runs['batch_64'] == {'batch_size': 64, 'log_every_steps': 80}
  assert plan.runs['batch_1024'] == {'batch_size': 1024, 'log_every_steps': 5}
  # The lr follows the batch linearly (optim.scaled_lr): base_lr x B / 256.
  for name, batch in (('batch_64', 64), ('batch_1024', 1024)):
    config = ablations.load_config('configs/fashion_mnist.py')[1]
    config.batch_size = batch
    _, schedule = optim.create_optimizer(config, 60000 // batch,
                                         3 * 60000 // batch)
    assert float(schedule(0)) == pytest.approx(
        config.optim.base_lr * batch / 256)
    assert plan.runs[name]['batch_size'] == batch

  pretrain, probe = ablations.commands(plan, '/out', 'batch_64')
  assert pretrain[1:4] == ['-m', 'simsiam_jax.main',
                           f'--config={REPO_ROOT}/configs/fashion_mnist.py']
  # The demo's config already runs the kNN monitor every epoch.
  assert pretrain[4:] == [
      '--workdir=/out/runs/batch_64', '--config.batch_size=64',
      '--config.log_every_steps=80']
  assert probe[4:] == ['--workdir=/out/probes/batch_64',
                       '--config.mode=fast_probe',
                       '--config.pretrained.workdir=/out/runs/batch_64']


def test_plan_with_sets_groups_and_step_budgets():
  plan = ablations.make_plan('configs/tiny.py', NO_KNN_EVERY_EPOCH + [
      'knn.k=20', 'seed=5'], ['stop_gradient', 'batch'], 2)
  assert list(plan.runs)[:2] == ['baseline_seed5', 'no_stop_gradient']
  assert plan.runs['baseline_seed6'] == {'seed': 6}
  assert {r.group for r in plan.rows} == {'baseline', 'stop_gradient',
                                          'batch'}
  # tiny counts steps (4 at batch 16, logging every 2): the step budget
  # scales with the batch to keep the epochs.
  assert plan.runs['batch_64'] == {'batch_size': 64, 'log_every_steps': 1,
                                   'num_train_steps': 1}
  pretrain, probe = ablations.commands(plan, '/o', 'baseline_seed6')
  assert pretrain[5:] == ['--config.knn.every_epochs=0', '--config.knn.k=20',
                          '--config.seed=6']
  assert probe[-3:] == ['--config.knn.every_epochs=0', '--config.knn.k=20',
                        '--config.seed=5']
  with pytest.raises(ablations.AblationError, match='knn.kk'):
    ablations.make_plan('configs/tiny.py', ['knn.kk=3'], [], 1)
  with pytest.raises(ablations.AblationError, match='--only'):
    ablations.make_plan('configs/tiny.py', [], ['stop_grad'], 1)
  with pytest.raises(ablations.AblationError, match="'x' is no value"):
    ablations.make_plan('configs/tiny.py', ['batch_size=x'], [], 1)


def test_dry_run_prints_and_runs_nothing(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(runs_lib, 'execute', _forbidden)
  assert ablations.run_ablations(str(tmp_path / 'out'), 'configs/tiny.py',
                                 ['symmetric'], 1, NO_KNN_EVERY_EPOCH,
                                 dry_run=True) is None
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4  # (baseline, asymmetric) x (run, probe)
  assert '--config.loss.symmetric=False' in lines[2]
  assert not (tmp_path / 'out').exists()


def test_command_line_dry_run_and_bad_flags(tmp_path):
  """The CLI itself, cheaply: it imports no JAX and starts no run here."""
  base = [sys.executable, '-m', 'simsiam_jax.experiments.ablations',
          f'--out={tmp_path}/out', '--config=configs/tiny.py', '--seeds=1']
  run = lambda *a: subprocess.run([*base, *a], cwd=REPO_ROOT, text=True,
                                  capture_output=True, timeout=120)
  result = run('--only=predictor', '--set=knn.k=20', '--dry_run')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert len(lines) == 8  # 4 runs (no baseline duplicate), each + probe
  assert all(' -m simsiam_jax.main --config=' in l for l in lines)
  assert sum('--config.model.predictor=fixed_random' in l for l in lines) == 1
  result = run('--only=predictors', '--dry_run')
  assert result.returncode == 2
  assert 'AblationError: --only takes groups of' in result.stderr
  assert not (tmp_path / 'out').exists()


def _forbidden(command, log_path):
  raise AssertionError(f'ran {command}')


# Running the table with a stand-in for the subprocesses.

KNN = {'baseline_seed0': 0.76, 'baseline_seed1': 0.74,
       'no_stop_gradient': 0.10}


class FakeRuns:
  """Stands in for `runs.execute`: writes what a run or probe would."""

  def __init__(self, fail=(), preempt=()):
    self.calls, self.fail, self.preempt = [], set(fail), set(preempt)

  def __call__(self, command, log_path):
    args = dict(a[2:].split('=', 1) for a in command if a.startswith('--'))
    workdir = args['workdir']
    name = os.path.basename(workdir)
    probe = args.get('config.mode') == 'fast_probe'
    self.calls.append(('probe ' if probe else '') + name)
    with open(log_path, 'a') as f:
      if name in self.fail and not probe:
        f.write('E1125 train.py:1] FloatingPointError: Loss is nan at step '
                '3\n')
        return 2
      if name in self.preempt and not probe:
        self.preempt.remove(name)
        f.write('W1125 main.py:1] Preempted: saved step 2\n')
        return runs_lib.PREEMPTED_EXIT_CODE
      f.write('I1125 main.py:1] Done\n')
    os.makedirs(workdir, exist_ok=True)
    knn = KNN[name]
    if probe:
      summary = {'probe_top1': knn + 0.05}
    else:
      summary = {'knn_top1': knn, 'collapse_std': 1.0 if knn > 0.5 else 0.1,
                 'loss': -0.9, 'wall_time_s': 1.0}
      with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
        for step in (2, 4):
          f.write(json.dumps({'step': step, 'epoch': step / 4, 'loss': -0.5,
                              'collapse_std': summary['collapse_std']}) + '\n')
        f.write(json.dumps({'step': 4, 'knn_top1': knn}) + '\n')
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f)
    return 0


def _run(out, fake, monkeypatch, **kwargs):
  monkeypatch.setattr(runs_lib, 'execute', fake)
  return ablations.run_ablations(str(out), 'configs/tiny.py',
                                 ['stop_gradient'], 2, NO_KNN_EVERY_EPOCH,
                                 command='test', **kwargs)


def test_table_numbers_plots_and_resume(tmp_path, monkeypatch):
  out = tmp_path / 'out'
  fake = FakeRuns(preempt={'no_stop_gradient'})
  res = _run(out, fake, monkeypatch)
  assert fake.calls == ['baseline_seed0', 'probe baseline_seed0',
                        'no_stop_gradient', 'baseline_seed1',
                        'probe baseline_seed1']
  assert res['runs']['no_stop_gradient']['status'] == 'interrupted'
  assert res['orderings']['stop_gradient']['probe_top1'] == 'n/a'
  # Rerun: only the interrupted run (and its probe) go again.
  fake = FakeRuns()
  res = _run(out, fake, monkeypatch)
  assert fake.calls == ['no_stop_gradient', 'probe no_stop_gradient']
  saved = json.loads((out / 'results.json').read_text())
  assert saved['rows'] == json.loads(json.dumps(res['rows']))
  base = res['rows']['baseline']
  assert base['knn_top1'] == pytest.approx(
      {'mean': 0.75, 'spread': 0.02, 'n': 2})
  assert base['probe_top1']['mean'] == pytest.approx(0.80)
  assert res['rows']['stop_gradient']['runs'] == ['baseline_seed0',
                                                  'baseline_seed1']
  assert res['rows']['no_stop_gradient']['knn_top1']['mean'] == 0.10
  assert res['rows']['no_stop_gradient']['collapse_std']['mean'] == 0.1
  assert res['rows']['no_stop_gradient']['paper_top1'] == 0.1
  assert res['orderings']['stop_gradient']['probe_top1'] == 'holds'
  assert res['wall_time_s'] > 0 and res['total_run_wall_s'] >= 0
  md = (out / 'ablations.md').read_text()
  assert ('| baseline | baseline | seeds 0, 1 | 75.00 ± 1.00 | 80.00 ± 1.00 |'
          in md)
  assert ('| stop_gradient | with stop-gradient | = baseline | 75.00 ± 1.00'
          in md)
  assert ('| stop_gradient | without stop-gradient | loss.stop_gradient=False '
          '| 10.00 | 15.00 | 0.100 |') in md
  assert 'holds; holds' in md and '## Failed' not in md
  for metric in ('collapse_std', 'knn_top1'):
    assert (out / 'plots' / f'stop_gradient_{metric}.png').stat().st_size > 0
    assert (out / 'plots' / f'baseline_{metric}.png').exists()
  # A third time: nothing left to run; finished summaries are untouched.
  mtime = (out / 'runs' / 'baseline_seed0' / 'summary.json').stat().st_mtime
  fake = FakeRuns()
  _run(out, fake, monkeypatch)
  assert not fake.calls
  assert (out / 'runs' / 'baseline_seed0' / 'summary.json'
          ).stat().st_mtime == mtime
  # Other flags on the same OUT would mix two tables.
  with pytest.raises(ablations.AblationError, match='another --out'):
    ablations.run_ablations(str(out), 'configs/tiny.py', ['stop_gradient'], 2,
                            ['knn.every_epochs=0', 'knn.k=5'])


def test_a_failed_run_is_recorded_not_fatal_nor_retried(tmp_path, monkeypatch):
  out = tmp_path / 'out'
  fake = FakeRuns(fail={'no_stop_gradient'})
  res = _run(out, fake, monkeypatch)
  assert 'baseline_seed1' in fake.calls  # the table went on
  run = res['runs']['no_stop_gradient']
  assert run['status'] == 'failed' and run['returncode'] == 2
  assert run['last_log_line'].endswith('FloatingPointError: Loss is nan at '
                                       'step 3')
  assert res['orderings']['stop_gradient']['knn_top1'] == 'n/a'
  md = (out / 'ablations.md').read_text()
  assert 'without stop-gradient (no_stop_gradient failed)' in md
  assert '## Failed' in md and 'Loss is nan at step 3' in md
  fake = FakeRuns(fail={'no_stop_gradient'})
  _run(out, fake, monkeypatch)
  assert not fake.calls  # failed stays failed
  fake = FakeRuns()
  res = _run(out, fake, monkeypatch, retry_failed=True)
  assert fake.calls == ['no_stop_gradient', 'probe no_stop_gradient']
  assert res['runs']['no_stop_gradient']['status'] == 'done'
  status = json.loads((out / 'runs' / 'no_stop_gradient.status.json'
                       ).read_text())
  assert status['attempts'] == 2


def test_preempted_exit_code_matches_the_trainer():
  assert runs_lib.PREEMPTED_EXIT_CODE == preemption.PREEMPTED_EXIT_CODE
  assert jax.device_count() == 8


# Real subprocesses: the tiny config on synthetic data.

@pytest.mark.slow
def test_command_line_on_tiny_runs(tmp_path):
  """Two real runs and probes (about 3 minutes on 2 busy cores), then a rerun
  that finds everything done."""
  out = tmp_path / 'out'
  command = [
      sys.executable, '-m', 'simsiam_jax.experiments.ablations',
      f'--out={out}', '--config=configs/tiny.py', '--only=stop_gradient',
      '--seeds=1', '--set=knn.every_epochs=0', '--set=knn.k=20',
      '--set=eval.batch_size=128', '--set=knn.baselines=False',
      '--set=probe.raw_pixels=False', f'--set=knn.cache_dir={tmp_path}/cache']
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900, env=os.environ.copy())
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  res = json.loads((out / 'results.json').read_text())
  assert list(res['runs']) == ['baseline_seed0', 'no_stop_gradient']
  for name, run in res['runs'].items():
    assert run['status'] == run['probe_status'] == 'done', run
    assert 0 <= run['knn_top1'] <= 1 and 0 <= run['probe_top1'] <= 1
    assert run['collapse_std'] > 0 and run['wall_s'] > 0
    assert (out / 'runs' / f'{name}.log').stat().st_size > 0
  config = json.loads((out / 'runs' / 'no_stop_gradient' / 'config.json'
                       ).read_text())
  assert config['loss']['stop_gradient'] is False
  assert res['orderings']['stop_gradient']['probe_top1'] in report.VERDICTS
  md = (out / 'ablations.md').read_text()
  assert '| stop_gradient | without stop-gradient |' in md
  assert '| baseline |' in result.stdout  # the table, printed at the end
  assert (out / 'plots' / 'stop_gradient_collapse_std.png').exists()
  mtime = (out / 'probes' / 'baseline_seed0' / 'summary.json').stat().st_mtime
  again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300, env=os.environ.copy())
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('(earlier)') == 2
  assert (out / 'probes' / 'baseline_seed0' / 'summary.json'
          ).stat().st_mtime == mtime
