"""PNG curves of a run from its metrics.jsonl: loss, collapse statistic, lr, kNN.

  python -m simsiam_jax.plot --workdir=DIR

Written at the end of every run too; one PNG per metric, against epochs.
"""

import os

from absl import app
from absl import flags

from simsiam_jax import metrics_io

METRICS = {
    'loss': 'SimSiam loss (-1 = aligned)',
    'collapse_std': 'std of l2-normalised z x sqrt(d) (1 healthy, 0 collapsed)',
    'learning_rate': 'learning rate',
    'knn_top1': 'kNN top-1 accuracy',
}


def plot_run(workdir: str) -> list[str]:
  """Writes WORKDIR/<metric>.png for each metric logged; returns the paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = metrics_io.read_metrics(workdir)
  # kNN rows carry no epoch: map steps to epochs from the rows that do.
  per_step = [r['epoch'] / r['step'] for r in rows
              if r.get('epoch') and r['step']]
  epochs_per_step = per_step[-1] if per_step else None
  written = []
  for name, label in METRICS.items():
    points = [(r['step'], r[name]) for r in rows if name in r]
    if not points:
      continue
    steps, values = zip(*points)
    x = ([s * epochs_per_step for s in steps] if epochs_per_step else steps)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, values, marker='o' if len(x) < 30 else None)
    ax.set_xlabel('epoch' if epochs_per_step else 'step')
    ax.set_ylabel(label)
    ax.set_title(f'{name} - {os.path.basename(os.path.normpath(workdir))}')
    ax.grid(alpha=0.3)
    path = os.path.join(workdir, f'{name}.png')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written


def main(argv):
  del argv
  for path in plot_run(flags.FLAGS.workdir):
    print(path)


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'Workdir of a run.')
  flags.mark_flag_as_required('workdir')
  app.run(main)
