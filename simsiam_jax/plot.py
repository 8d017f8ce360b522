"""PNG curves of a run from its metrics.jsonl: loss, collapse statistics, lr, kNN.

  python -m simsiam_jax.plot --workdir=DIR
  python -m simsiam_jax.plot --workdir=RUN_A --workdir=RUN_B --out=DIR \
      --prefix=compare_     # several runs overlaid

Written at the end of every run too; one PNG per metric, against epochs.
The kNN and effective-rank plots draw the run's baselines (raw pixels,
random init), when its summary.json or metrics.jsonl holds them, as
horizontal dashed lines.
"""

import io
import json
import sys

from absl import app
from absl import flags
from etils import epath

from simsiam_jax import metrics_io
from simsiam_jax import workdir as workdir_lib

METRICS = {
    'loss': 'training loss (SimSiam: -1 = aligned)',
    'collapse_std': 'std of l2-normalised z x sqrt(d) (1 healthy, 0 collapsed)',
    'batch_z_rank': "effective rank of the batch's z",
    'param_norm': 'global norm of the parameters',
    'learning_rate': 'learning rate',
    'knn_top1': 'kNN top-1 accuracy',
    'feature_rank': 'effective rank of backbone features (clean images)',
    'z_rank': 'effective rank of z (clean images)',
    'test_top1': 'test top-1 accuracy (linear probe / fine-tuning)',
}
# Constant references drawn on a metric's plot: {metric: {key: label}}.
BASELINES = {
    name: {f'{name.replace("_top1", "")}_{kind}': label
           for kind, label in (('raw_pixels', 'raw pixels'),
                               ('random_init', 'random init'))}
    for name in ('knn_top1', 'feature_rank', 'z_rank')}
_COLOURS = {'raw pixels': 'tab:gray', 'random init': 'black'}  # not in the curves' cycle


def _curves(workdir: str) -> dict:
  """{metric: (x, values, 'epoch' or 'step')} of one run's metrics.jsonl."""
  rows = metrics_io.read_metrics(workdir)
  # kNN rows carry no epoch: map steps to epochs from the rows that do.
  per_step = [r['epoch'] / r['step'] for r in rows
              if r.get('epoch') and r['step']]
  epochs_per_step = per_step[-1] if per_step else None
  curves = {}
  for name in METRICS:
    points = [(r['step'], r[name]) for r in rows if name in r]
    if points:
      steps, values = zip(*points)
      x = ([s * epochs_per_step for s in steps] if epochs_per_step else steps)
      curves[name] = (x, values, 'epoch' if epochs_per_step else 'step')
  return curves


def _baselines(workdir: str, metric: str) -> dict:
  """{label: value} of `metric`'s baselines (summary.json or metrics.jsonl)."""
  keys = BASELINES.get(metric)
  if not keys:
    return {}
  found = {}
  for row in metrics_io.read_metrics(workdir):  # the last value wins
    found.update({k: row[k] for k in keys if k in row})
  path = epath.Path(workdir) / workdir_lib.SUMMARY_FILE
  if path.exists():
    summary = json.loads(path.read_text())
    found.update({k: summary[k] for k in keys if k in summary})
  return {keys[k]: float(v) for k, v in found.items()}


def _draw_baselines(ax, baselines: dict):
  """Horizontal lines, one per {legend label: value}: dashed, then dotted
  and dash-dotted for a label's other values."""
  seen = {}
  for label, value in baselines.items():
    kind = label.split(' (')[0]
    style = ('--', ':', '-.')[min(seen.get(kind, 0), 2)]
    seen[kind] = seen.get(kind, 0) + 1
    ax.axhline(value, linestyle=style, color=_COLOURS.get(kind), label=label)


def _shared_baselines(per_run: list) -> dict:
  """[(run, {label: value})] -> {legend label: value}, each line once.

  Runs on the same data share their baselines: one line for all of them,
  named by its label. Where a label's value differs between runs (random
  init of another seed), the value most runs share keeps the plain label
  and each other value is named 'label (its runs)'.
  """
  values = {}
  for run, baselines in per_run:
    for label, value in baselines.items():
      values.setdefault(label, {}).setdefault(round(value, 6), []).append(run)
  lines = {}
  for label, by_value in values.items():
    common = max(by_value, key=lambda v: len(by_value[v]))
    lines[label] = common
    for value, runs in by_value.items():
      if value != common:
        lines[f'{label} ({", ".join(runs)})'] = value
  return lines


def _name(workdir: str) -> str:
  return str(workdir).rstrip('/').rsplit('/', 1)[-1]


def plot_runs(workdirs: list[str], out_dir: str, prefix: str = '') -> list[str]:
  """One PNG per metric in `out_dir`, each run's curve on it; returns the paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  runs = [(_name(w) if len(workdirs) > 1 else '', _curves(w), w)
          for w in workdirs]
  epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
  written = []
  for name, label in METRICS.items():
    if not any(name in curves for _, curves, _ in runs):
      continue
    fig, ax = plt.subplots(figsize=(9, 4) if len(runs) > 1 else (6, 4))
    per_run = []
    for run, curves, workdir in runs:
      if name in curves:
        x, values, unit = curves[name]
        ax.plot(x, values, marker='o' if len(x) < 30 else None,
                label=run or None)
        ax.set_xlabel(unit)
        per_run.append((run, _baselines(workdir, name)))
    baselines = _shared_baselines(per_run)
    if baselines:
      _draw_baselines(ax, baselines)
    ax.set_ylabel(label)
    ax.set_title(name if len(runs) > 1 else f'{name} - {_name(workdirs[0])}')
    if len(runs) > 1:  # beside the axes, where it covers no curve
      ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.01, 1))
    elif baselines:
      ax.legend(fontsize='small')
    ax.grid(alpha=0.3)
    path = epath.Path(out_dir) / f'{prefix}{name}.png'
    fig.tight_layout()
    buf = io.BytesIO()  # works for gs:// too
    fig.savefig(buf, format='png', dpi=100)
    path.write_bytes(buf.getvalue())
    plt.close(fig)
    written.append(str(path))
  return written


def plot_run(workdir: str) -> list[str]:
  """Writes WORKDIR/<metric>.png for each metric logged; returns the paths."""
  return plot_runs([workdir], workdir)


def main(argv):
  del argv
  f = flags.FLAGS
  missing = [w for w in f.workdir
             if not (epath.Path(w) / metrics_io.METRICS_FILE).exists()]
  if missing:
    print(f'plot: no {metrics_io.METRICS_FILE} in {", ".join(missing)}: '
          'pass the --workdir of a run.', file=sys.stderr)
    raise SystemExit(2)
  if len(f.workdir) == 1 and not f.out:
    paths = plot_run(f.workdir[0])
  else:
    paths = plot_runs(f.workdir, f.out or f.workdir[0], f.prefix)
  for path in paths:
    print(path)


if __name__ == '__main__':
  flags.DEFINE_multi_string('workdir', None, 'Workdir of a run; repeat it to '
                            'draw several runs on one plot.')
  flags.DEFINE_string('out', '', 'Folder for the PNGs (default: the first '
                      'workdir).')
  flags.DEFINE_string('prefix', '', 'Prefix of the PNG file names.')
  flags.mark_flag_as_required('workdir')
  app.run(main)
