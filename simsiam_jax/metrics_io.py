"""Metric writers: TensorBoard through clu when TensorFlow is there, always a JSONL log.

clu's writers import TensorFlow; the trainer must also run where there is
none (the data then comes from memory), so clu is imported lazily and, if that
fails, metrics go to the log and `metrics.jsonl` only.
"""

import json
from typing import Any, Mapping

from absl import logging
from etils import epath
import numpy as np

from simsiam_jax import workdir as workdir_lib

METRICS_FILE = 'metrics.jsonl'


def is_remote(path) -> bool:
  """gs:// and other object stores (no appends, no local os calls)."""
  return '://' in str(path)


class JsonlWriter:
  """Appends one JSON line per write: {"step": s, name: value, ...}.

  Read back by `read_metrics` (plots, summaries, tests) without TensorBoard.
  On object stores (gs://), which cannot append, the file is rewritten.
  """

  def __init__(self, workdir: str):
    self._path = epath.Path(workdir) / METRICS_FILE
    self._text = None  # object stores: the file's content so far

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {'step': int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    line = json.dumps(row) + '\n'
    if is_remote(self._path):
      if self._text is None:
        self._text = self._path.read_text() if self._path.exists() else ''
      self._text += line
      self._path.write_text(self._text)
    else:
      with open(self._path, 'a') as f:
        f.write(line)

  def flush(self):
    pass

  def close(self):
    pass


class LoggingWriter(JsonlWriter):
  """Fallback for the TensorBoard writer: scalars to the absl log."""

  def __init__(self):  # pylint: disable=super-init-not-called
    pass

  def write_scalars(self, step, scalars):
    logging.info('[%d] %s', step, ', '.join(
        f'{k}={float(np.asarray(v)):.6g}' for k, v in sorted(scalars.items())))


class MultiWriter:
  """Fans every call out to several writers."""

  def __init__(self, writers):
    self.writers = list(writers)

  def __getattr__(self, name):
    def call(*args, **kwargs):
      for w in self.writers:
        getattr(w, name)(*args, **kwargs)
    return call


def create_writer(workdir: str, is_chief: bool,
                  start_step: int = 0) -> MultiWriter:
  """TensorBoard + log + metrics.jsonl on the chief; nothing elsewhere.

  metrics.jsonl keeps the rows up to `start_step` (the step the run
  resumes from; 0 for a fresh start): rows an interrupted attempt wrote
  after its last checkpoint are logged again, so they go.
  """
  if not is_chief:
    return MultiWriter([])
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  _drop_rows_after(epath.Path(workdir) / METRICS_FILE, start_step)
  writers = [JsonlWriter(workdir)]
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    writers.append(metric_writers.create_default_writer(workdir))
  except ImportError as e:
    logging.warning('TensorBoard events not written (%s); metrics go to the log '
                    'and %s.', e, METRICS_FILE)
    writers.append(LoggingWriter())
  return MultiWriter(writers)


def _drop_rows_after(path: epath.Path, step: int):
  if not path.exists():
    return
  lines = [l for l in path.read_text().splitlines() if l.strip()]
  keep = [l for l in lines if json.loads(l)['step'] <= step]
  if len(keep) < len(lines):
    logging.info('%s: dropped the %d rows after step %d (logged again now).',
                  path, len(lines) - len(keep), step)
    workdir_lib.write_atomic(path, ''.join(l + '\n' for l in keep))


def read_metrics(workdir: str) -> list[dict]:
  """All rows of `metrics.jsonl`, in the order written."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()
          if line.strip()]
