"""The SimSiam paper's ablation table on real data: one command, resumable.

  python -m simsiam_jax.experiments.ablations --out=DIR \
      [--config=configs/fashion_mnist.py] [--only=stop_gradient,batch] \
      [--seeds=3] [--set=num_epochs=1 ...] [--dry_run] [--retry_failed]

On the demo config (configs/fashion_mnist.py, about 10 minutes a run on 2
CPU cores) the whole table is 16 runs and their probes: about 3 to 3.5 hours.

Each row is a pretraining run of the base config with a few config
overrides, run as its own `python -m simsiam_jax.main` process (a crash, NaN
or collapse stop ends that run only; its output is in OUT/runs/NAME.log),
then the fast linear probe of its last checkpoint (`config.mode=fast_probe`,
OUT/probes/NAME). Run the same command again to resume: a run or probe whose
summary.json exists is skipped, an interrupted run resumes from its
checkpoints, and a failed one (nonzero exit) stays failed, with its log's
last line in the table, unless --retry_failed.

Writes OUT/results.json, OUT/ablations.md (per row: kNN top-1, probe top-1,
final collapse_std and wall time beside the paper's ImageNet linear top-1,
and whether the paper's ordering of the group holds here) and, per group,
its runs' curves overlaid in OUT/plots/GROUP_*.png.

The baseline runs at --seeds seeds (the base config's seed, +1, ...), every
other row once at the base seed; a row that equals the baseline (BN
'default', batch 256 in the demo config, ...) is the baseline's runs. A
difference no larger than the baseline's seed range (max - min) counts as a
tie. Batch rows keep the epoch count: the lr follows the batch through
`optim.scaled_lr` (base_lr x B / 256), and log_every_steps (and
num_train_steps when the base counts steps) scale by base batch / B so each
run logs as often per epoch. The kNN monitor runs every epoch
(knn.every_epochs=1) unless the base config or --set says otherwise.
"""

import ast
import dataclasses
import functools
import importlib.util
import os
import shlex
import signal
import sys
import time

from absl import app
from absl import flags
import ml_collections

from simsiam_jax.experiments import report
from simsiam_jax.experiments import runs as runs_lib

REPO_ROOT = runs_lib.REPO_ROOT

PAPER_SOURCE = (
    'Chen & He, "Exploring Simple Siamese Representation Learning" (CVPR '
    '2021, arXiv:2011.10566): ImageNet linear top-1 (%), ResNet-50, 100 '
    'epochs (Fig. 2, Tables 1-5), as listed in /work/shared/REFERENCE.md; '
    'BN "all" from the paper\'s Table 3d.')
PAPER_TOP1 = {
    'baseline': 68.1, 'stop_gradient': 68.1, 'no_stop_gradient': 0.1,
    'predictor_mlp': 68.1, 'predictor_none': 0.1,
    'predictor_fixed_random': 1.5, 'predictor_lr_decayed': 67.7,
    'head_bn_none': 34.6, 'head_bn_hidden': 67.4, 'head_bn_default': 68.1,
    'head_bn_all': None, 'similarity_cosine': 68.1,
    'similarity_cross_entropy': 63.2, 'symmetric': 68.1, 'asymmetric': 64.8,
    'batch_64': 66.1, 'batch_128': 67.3, 'batch_256': 68.1,
    'batch_512': 68.1, 'batch_1024': 68.0}
PAPER_NOTE = {'head_bn_all': 'unstable'}
BATCH_SIZES = (64, 128, 256, 512, 1024)


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  group: str
  label: str
  overrides: dict  # {dotted config field: value} over the base config


# The paper's claim per group, as (left, op, right) on linear top-1. op: '>'
# where the paper's gap is 1 point or more, '>=' where it is smaller, '~'
# where it is 0.1 or less (tested against PAPER_TOP1).
CLAIMS = {
    'stop_gradient': (('stop_gradient', '>', 'no_stop_gradient'),),
    'predictor': (('predictor_mlp', '>', 'predictor_none'),
                  ('predictor_mlp', '>', 'predictor_fixed_random'),
                  ('predictor_mlp', '>=', 'predictor_lr_decayed')),
    'head_bn': (('head_bn_default', '>=', 'head_bn_hidden'),
                ('head_bn_hidden', '>', 'head_bn_none'),
                ('head_bn_default', '>', 'head_bn_all')),
    'similarity': (('similarity_cosine', '>', 'similarity_cross_entropy'),),
    'symmetric': (('symmetric', '>', 'asymmetric'),),
    'batch': (('batch_256', '~', 'batch_512'), ('batch_256', '~', 'batch_1024'),
              ('batch_256', '>=', 'batch_128'), ('batch_128', '>', 'batch_64')),
}
GROUPS = ('baseline', *CLAIMS)
METRICS = ('knn_top1', 'probe_top1', 'collapse_std', 'wall_s')


class AblationError(ValueError):
  """Flags or an output folder the command cannot use."""


class Interrupted(Exception):
  """SIGTERM: the current run saves its checkpoint, then the command stops."""


def batch_overrides(base: ml_collections.ConfigDict, batch: int) -> dict:
  """Batch `batch` at the base's epoch count, logging as often per epoch."""
  scale = base.batch_size / batch
  overrides = {'batch_size': batch,
               'log_every_steps': max(1, round(base.log_every_steps * scale))}
  if base.num_train_steps > 0:
    overrides['num_train_steps'] = max(1, round(base.num_train_steps * scale))
  return overrides


def all_rows(base: ml_collections.ConfigDict) -> list[Row]:
  """Every row of the table, in table order."""
  return [
      Row('baseline', 'baseline', 'baseline', {}),
      Row('stop_gradient', 'stop_gradient', 'with stop-gradient',
          {'loss.stop_gradient': True}),
      Row('no_stop_gradient', 'stop_gradient', 'without stop-gradient',
          {'loss.stop_gradient': False}),
      Row('predictor_mlp', 'predictor', 'MLP predictor, constant lr',
          {'model.predictor': 'mlp', 'optim.fix_pred_lr': True}),
      Row('predictor_none', 'predictor', 'no predictor',
          {'model.predictor': 'none'}),
      Row('predictor_fixed_random', 'predictor', 'fixed random predictor',
          {'model.predictor': 'fixed_random'}),
      Row('predictor_lr_decayed', 'predictor', 'MLP predictor, lr decayed',
          {'model.predictor': 'mlp', 'optim.fix_pred_lr': False}),
      *[Row(f'head_bn_{kind}', 'head_bn', f'BN in MLPs: {kind}',
            {'model.head_bn': kind})
        for kind in ('none', 'hidden', 'default', 'all')],
      Row('similarity_cosine', 'similarity', 'cosine similarity',
          {'loss.similarity': 'cosine'}),
      Row('similarity_cross_entropy', 'similarity', 'cross-entropy similarity',
          {'loss.similarity': 'cross_entropy'}),
      Row('symmetric', 'symmetric', 'symmetric loss', {'loss.symmetric': True}),
      Row('asymmetric', 'symmetric', 'asymmetric loss',
          {'loss.symmetric': False}),
      *[Row(f'batch_{b}', 'batch', f'batch {b}', batch_overrides(base, b))
        for b in BATCH_SIZES],
  ]


def load_config(config_arg: str) -> tuple[str, ml_collections.ConfigDict]:
  """(absolute 'path[:variant]', its config) of a --config value."""
  path, _, variant = config_arg.partition(':')
  if not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
    path = os.path.join(REPO_ROOT, path)
  if not os.path.exists(path):
    raise AblationError(f'--config={config_arg}: no such file.')
  if REPO_ROOT not in sys.path:  # config files import `configs.default`
    sys.path.insert(0, REPO_ROOT)
  spec = importlib.util.spec_from_file_location('_ablation_base', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  path = os.path.abspath(path)
  return (f'{path}:{variant}' if variant else path), config


def _field(config, key: str):
  try:
    return functools.reduce(getattr, key.split('.'), config)
  except AttributeError as e:
    raise AblationError(f'{key!r} is not a config field.') from e


def _parse(text: str, current):
  """`text` as a value of `current`'s type (the run parses it for real)."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ('true', 'false'):
        raise ValueError('not True or False')
      return text.lower() == 'true'
    for kind in (int, float, str):
      if isinstance(current, kind):
        return kind(text)
    return ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise AblationError(f'{text!r} is no value for a field holding '
                        f'{current!r} ({e}).') from e


def _set(config, key: str, value):
  _field(config, key)
  *parents, leaf = key.split('.')
  setattr(functools.reduce(getattr, parents, config), leaf, value)


@dataclasses.dataclass
class Plan:
  """The runs of one invocation: which, with which overrides, in which order."""
  config: str                # absolute 'path[:variant]' passed to every run
  monitor: dict[str, str]    # the per-epoch kNN default, as flag strings
  sets: dict[str, str]       # --set, as given
  base: ml_collections.ConfigDict  # the base config with both applied
  seeds: list[int]           # the baseline's
  rows: list[Row]            # the selected groups' rows
  row_runs: dict[str, list[str]]   # row name -> its run names
  runs: dict[str, dict]      # run name -> overrides over `base`, in run order


def _parse_sets(sets: list[str]) -> dict[str, str]:
  parsed = {}
  for item in sets:
    key, sep, value = item.partition('=')
    if not sep:
      raise AblationError(f'--set {item!r}: expected key=value.')
    parsed[key] = value
  return parsed


def make_plan(config_arg: str, sets: list[str], only: list[str],
              seeds: int) -> Plan:
  """Resolves the flags into runs, checking every override on the config."""
  config, base = load_config(config_arg)
  unknown = set(only) - set(GROUPS)
  if unknown or seeds < 1:
    raise AblationError(f'--only takes groups of {", ".join(GROUPS)} (got '
                        f'{sorted(unknown)}); --seeds must be >= 1.')
  monitor = {'knn.every_epochs': '1'} if base.knn.every_epochs <= 0 else {}
  sets = _parse_sets(sets)
  for key, value in {**monitor, **sets}.items():
    _set(base, key, _parse(value, _field(base, key)))
  seed_list = [base.seed + i for i in range(seeds)]
  baseline = [f'baseline_seed{s}' for s in seed_list]
  runs = {baseline[0]: {}}
  groups = set(only or GROUPS) | {'baseline'}  # every claim needs it
  rows = [r for r in all_rows(base) if r.group in groups]
  row_runs = {}
  for row in rows:
    own = {k: v for k, v in row.overrides.items() if _field(base, k) != v}
    row_runs[row.name] = [row.name] if own else baseline
    if own:
      runs[row.name] = own
  # The other seeds last: the table has every row before its noise band.
  runs.update({name: {'seed': s} for name, s in zip(baseline, seed_list)
               if s != base.seed})
  return Plan(config, monitor, sets, base, seed_list, rows, row_runs, runs)


def commands(plan: Plan, out: str, name: str) -> tuple[list[str], list[str]]:
  """(pretraining, probe) command lines of run `name`.

  Each field is given once: the row's overrides over --set over the kNN
  default. The probe gets --set only (it rebuilds the network from the
  run's checkpoint; --set may change its data or kNN feature batch).
  """
  head = [sys.executable, '-m', 'simsiam_jax.main', f'--config={plan.config}']
  overrides = {**plan.monitor, **plan.sets,
               **{k: str(v) for k, v in plan.runs[name].items()}}
  run_dir, probe_dir = _dirs(out, name)
  pretrain = [*head, f'--workdir={run_dir}',
              *[f'--config.{k}={v}' for k, v in overrides.items()]]
  probe = [*head, f'--workdir={probe_dir}', '--config.mode=fast_probe',
           f'--config.pretrained.workdir={run_dir}',
           *[f'--config.{k}={v}' for k, v in plan.sets.items()]]
  return pretrain, probe


def _dirs(out: str, name: str) -> tuple[str, str]:
  return os.path.join(out, 'runs', name), os.path.join(out, 'probes', name)


def results(out: str, plan: Plan) -> dict:
  """results.json's content from what the runs wrote so far."""
  runs = {name: {**runs_lib.collect(*_dirs(out, name)), 'overrides': o}
          for name, o in plan.runs.items()}
  rows = {}
  for row in plan.rows:
    names = plan.row_runs[row.name]
    rows[row.name] = {
        'group': row.group, 'label': row.label, 'runs': names,
        'overrides': plan.runs.get(row.name, {}),
        'paper_top1': PAPER_TOP1[row.name],
        'paper_note': PAPER_NOTE.get(row.name, ''),
        **{m: report.aggregate([runs[n][m] for n in names])
           for m in METRICS}}
  claims = {g: c for g, c in CLAIMS.items() if any(r.group == g
                                                   for r in plan.rows)}
  return {'config': plan.config, 'set': {**plan.monitor, **plan.sets},
          'seeds': plan.seeds, 'paper_source': PAPER_SOURCE, 'runs': runs,
          'rows': rows, 'orderings': report.evaluate_claims(rows, claims),
          'total_run_wall_s': sum((r['wall_s'] or 0) + (r['probe_wall_s'] or 0)
                                  for r in runs.values())}


def write_report(out: str, plan: Plan, command: str, wall_s: float,
                 plots: bool = False) -> dict:
  """OUT/results.json and OUT/ablations.md (and with `plots`, OUT/plots/)."""
  res = {**results(out, plan), 'command': command, 'wall_time_s': wall_s}
  if plots:
    group_runs = {}
    for row in plan.rows:
      group_runs.setdefault(row.group, []).extend(plan.row_runs[row.name])
    res['plots'] = report.write_plots(os.path.join(out, 'runs'), group_runs,
                                      os.path.join(out, 'plots'))
  runs_lib.write_json(os.path.join(out, 'results.json'), res)
  with open(os.path.join(out, 'ablations.md'), 'w') as f:
    f.write(report.markdown(res))
  return res


def _check_out(out: str, plan: Plan):
  """OUT keeps one base config and one --set: a rerun resumes, never mixes."""
  path = os.path.join(out, 'ablation.json')
  key = {'config': plan.config, 'set': plan.sets}
  held = runs_lib.read_json(path)
  if held and held != key:
    raise AblationError(
        f'{out} holds runs of {held}, not {key}: rerun with those flags to '
        'resume, or pass another --out.')
  runs_lib.write_json(path, key)


def _print_dry_run(plan: Plan, out: str):
  for name in plan.runs:
    for cmd, workdir in zip(commands(plan, out, name), _dirs(out, name)):
      done = '# done: ' if runs_lib.finished(workdir) else ''
      print(f'{done}{shlex.join(cmd)} > {workdir}.log 2>&1')


def run_ablations(out: str, config: str, only=(), seeds: int = 3, sets=(),
                  dry_run: bool = False, retry_failed: bool = False,
                  command: str = '') -> dict | None:
  """Runs (or resumes) the table; returns results.json's content.

  Raises:
    AblationError: a flag names no group or config field, or OUT holds
      runs of other flags.
    KeyboardInterrupt, Interrupted: after the current run saved its
      checkpoint and the tables were written.
  """
  plan = make_plan(config, list(sets), list(only), seeds)
  out = os.path.abspath(out)
  if dry_run:
    _print_dry_run(plan, out)
    return None
  for sub in ('runs', 'probes'):
    os.makedirs(os.path.join(out, sub), exist_ok=True)
  _check_out(out, plan)
  start = time.perf_counter()
  try:
    for i, name in enumerate(plan.runs, 1):
      pretrain, probe = commands(plan, out, name)
      run_dir, probe_dir = _dirs(out, name)
      print(f'[{i}/{len(plan.runs)}] {name} (log: {run_dir}.log)', flush=True)
      status = runs_lib.run_job(pretrain, run_dir, retry_failed)
      if status['status'] == 'done':
        status = runs_lib.run_job(probe, probe_dir, retry_failed)
      _print_run(runs_lib.collect(run_dir, probe_dir), status)
      write_report(out, plan, command, time.perf_counter() - start)
  except (KeyboardInterrupt, Interrupted):
    write_report(out, plan, command, time.perf_counter() - start)
    print('Interrupted: run the same command to resume.', flush=True)
    raise
  return write_report(out, plan, command, time.perf_counter() - start,
                      plots=True)


def _print_run(run: dict, status: dict):
  std = run['collapse_std']
  print(f'  {run["status"]}, probe {run["probe_status"]}'
        f'{" (earlier)" if status.get("skipped") else ""}: kNN '
        f'{report.percent(run["knn_top1"])} %, probe '
        f'{report.percent(run["probe_top1"])} %, collapse_std '
        f'{"—" if std is None else f"{std:.3f}"}, '
        f'{report.duration(run["wall_s"])}'
        + (f' | {status.get("last_log_line")}'
           if status['status'] == 'failed' else ''), flush=True)


def _terminate(signum, frame):
  del signum, frame
  raise Interrupted()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  signal.signal(signal.SIGTERM, _terminate)
  f = flags.FLAGS
  command = shlex.join(['python', '-m', 'simsiam_jax.experiments.ablations',
                        *sys.argv[1:]])
  try:
    res = run_ablations(f.out, f.config, f.only, f.seeds, f['set'].value,
                        f.dry_run, f.retry_failed, command)
  except AblationError as e:
    print(f'AblationError: {e}', file=sys.stderr)
    raise SystemExit(2) from e
  except Interrupted as e:
    raise SystemExit(runs_lib.PREEMPTED_EXIT_CODE) from e
  if res is not None:
    print(report.markdown(res))


def define_flags():
  """The CLI's flags (not at import: 'config' would clash with main.py's)."""
  flags.DEFINE_string('out', None, 'Folder of the runs, probes and tables.')
  flags.DEFINE_string('config', 'configs/fashion_mnist.py',
                      'Base config (path[:variant]).')
  flags.DEFINE_list('only', [], 'Groups to run (default all): '
                    f'{", ".join(GROUPS)}; the baseline always runs.')
  flags.DEFINE_integer('seeds', 3, 'Seeds of the baseline.')
  flags.DEFINE_multi_string('set', [], 'key=value: a config override for '
                            'every run and probe (repeatable).')
  flags.DEFINE_bool('dry_run', False, 'Print the commands only.')
  flags.DEFINE_bool('retry_failed', False, 'Run failed runs and probes again.')
  flags.mark_flag_as_required('out')


if __name__ == '__main__':
  define_flags()
  app.run(main)
