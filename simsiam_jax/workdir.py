"""A run's workdir: created with its config, finished with its summary.

  WORKDIR/config.json       the run's config (written here)
  WORKDIR/summary.json      the final numbers (written here)
  WORKDIR/checkpoints/      Orbax checkpoints (checkpointing.py)
  WORKDIR/metrics.jsonl     every logged scalar, and TensorBoard events
                            (metrics_io.py)
  WORKDIR/*.png             one plot per logged curve (plot.py)

Paths may be local or gs://... (etils.epath).
"""

import json

from etils import epath

SUMMARY_FILE = 'summary.json'
CONFIG_FILE = 'config.json'


class WorkdirError(OSError):
  """The workdir cannot be created or written."""


def prepare(workdir: str, config):
  """Creates the workdir (a local path or gs://...) and saves `config` there.

  Process 0's job: callers check. No JAX here, so tools read workdirs cheaply.

  Raises:
    WorkdirError: it cannot be created or written.
  """
  try:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
  except OSError as e:
    raise WorkdirError(f'Cannot write to workdir {workdir!r} ({e}). Pass a '
                       'writable --workdir with free space.') from e


def write_summary(workdir: str, summary: dict):
  """Writes summary.json (process 0's job: callers check)."""
  (epath.Path(workdir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
