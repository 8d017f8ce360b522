"""A recipe sweep: named pretraining runs of one config, resumable, one table.

  python -m simsiam_jax.experiments.sweep --out=DIR \
      [--config=configs/fashion_mnist.py] \
      --run='base' --run='lr03 optim.base_lr=0.3' \
      --run='s1 model.cifar_stem_stride=1 num_epochs=3' [--probe] [--seeds=1]

Each --run is a name and `--config.FIELD=VALUE` overrides (none: the config
as it is). Every run is its own `python -m simsiam_jax.main` process in
OUT/NAME (log OUT/NAME.log); with --seeds=N it runs at seeds 0..N-1 as
NAME_s0, NAME_s1, ... Run the same command again to resume: what finished is
skipped, what was interrupted resumes from its checkpoints. With --probe the
fast linear probe of each run's last checkpoint follows (OUT/probes/NAME).

Writes OUT/sweep.md after every run: kNN top-1 and the features' spread
(effective rank and participation ratio of the backbone features and z on
clean train images, evaluation/spectrum.py) beside the baselines, the
batch's z rank at the last log line, probe top-1, wall time and images/s.
"""

import os
import sys

from absl import app
from absl import flags

from simsiam_jax.experiments import runs as runs_lib

FLAGS = flags.FLAGS

COLUMNS = (('knn_top1', 'kNN %', 100), ('feature_rank', 'feat. rank', 1),
           ('feature_pr', 'feat. PR', 1), ('z_rank', 'z rank', 1),
           ('z_pr', 'z PR', 1), ('z_corr', 'z mean abs corr', 1),
           ('batch_z_rank', 'batch z rank', 1),
           ('probe_top1', 'probe %', 100), ('wall_s', 'wall s', 1),
           ('images_per_sec', 'img/s', 1))
BASELINES = ('raw_pixels', 'random_init')


def parse_run(spec: str) -> tuple[str, list[str]]:
  """'NAME F=V ...' -> (NAME, ['--config.F=V', ...])."""
  name, *overrides = spec.split()
  bad = [o for o in overrides if '=' not in o]
  if not name.replace('_', '').replace('-', '').replace('.', '').isalnum() or bad:
    raise ValueError(f'--run {spec!r}: want NAME FIELD=VALUE ...')
  return name, [f'--config.{o}' for o in overrides]


def expand(specs: list[str], seeds: int) -> list[tuple[str, list[str]]]:
  """Every (run name, overrides) with its seed."""
  out = []
  for spec in specs:
    name, overrides = parse_run(spec)
    if seeds == 1:
      out.append((name, overrides))
    else:
      out += [(f'{name}_s{s}', overrides + [f'--config.seed={s}'])
              for s in range(seeds)]
  return out


def _command(config: str, workdir: str, overrides: list[str],
             mode_flags=()) -> list[str]:
  return [sys.executable, '-m', 'simsiam_jax.main', f'--config={config}',
          f'--workdir={workdir}', *overrides, *mode_flags]


def row(out: str, name: str) -> dict:
  """A run's summary with its status, probe and wall time (`runs.collect`)."""
  run_dir = os.path.join(out, name)
  return {**runs_lib.read_json(os.path.join(run_dir, runs_lib.SUMMARY_FILE)),
          **runs_lib.collect(run_dir, os.path.join(out, 'probes', name))}


def _cell(value, scale) -> str:
  return '' if value is None else f'{value * scale:.2f}'


def table(out: str, runs: list[tuple[str, list[str]]]) -> str:
  """The sweep as Markdown: a row per run, the baselines' row first."""
  rows = {name: row(out, name) for name, _ in runs}
  lines = ['| run | overrides | status | ' +
           ' | '.join(label for _, label, _ in COLUMNS) + ' |',
           '|' + '---|' * (len(COLUMNS) + 3)]
  for base in BASELINES:
    found = next((r for r in rows.values() if f'knn_{base}' in r), None)
    if found:
      cells = [_cell(found.get(f'{k.replace("_top1", "")}_{base}'), s)
               for k, _, s in COLUMNS]
      lines.append(f'| ({base.replace("_", " ")}) | | | ' +
                   ' | '.join(cells) + ' |')
  for name, overrides in runs:
    r = rows[name]
    shown = ' '.join(o.replace('--config.', '') for o in overrides)
    lines.append(f'| {name} | `{shown}` | {r["status"]} | ' +
                 ' | '.join(_cell(r.get(k), s) for k, _, s in COLUMNS) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  out = FLAGS.out
  runs = expand(FLAGS.run, FLAGS.seeds)
  os.makedirs(os.path.join(out, 'probes'), exist_ok=True)
  for name, overrides in runs:
    workdir = os.path.join(out, name)
    record = runs_lib.run_job(_command(FLAGS.config, workdir, overrides),
                              workdir, FLAGS.retry_failed)
    print(f'{name}: {record.get("status")}', flush=True)
    if FLAGS.probe and runs_lib.finished(workdir):
      probe_dir = os.path.join(out, 'probes', name)
      runs_lib.run_job(_command(FLAGS.config, probe_dir, overrides, (
          '--config.mode=fast_probe', f'--config.pretrained.workdir={workdir}')),
          probe_dir, FLAGS.retry_failed)
    with open(os.path.join(out, 'sweep.md'), 'w') as f:
      f.write(table(out, runs))
  print(table(out, runs))


def define_flags():
  """The CLI's flags (not at import: 'config' would clash with main.py's)."""
  flags.DEFINE_string('out', None, 'Folder of the runs and the table.')
  flags.DEFINE_string('config', 'configs/fashion_mnist.py', 'Base config.')
  flags.DEFINE_multi_string('run', [], "'NAME FIELD=VALUE ...': one run.")
  flags.DEFINE_integer('seeds', 1, 'Seeds per run: 0 .. seeds-1.')
  flags.DEFINE_bool('probe', False, 'Also the fast linear probe of each run.')
  flags.DEFINE_bool('retry_failed', False, 'Run failed runs again.')
  flags.mark_flag_as_required('out')


if __name__ == '__main__':
  define_flags()
  app.run(main)
