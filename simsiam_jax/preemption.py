"""Preemption: SIGTERM or JAX's preemption notice -> save, then exit 75.

`PreemptionWatcher` turns SIGTERM (one process) or JAX's preemption sync
point (several) into a stop after the step's save; `sigterm_is_preemption`
makes SIGTERM outside the steps (start-up, the final evaluation) raise
`Preempted` too. main.py exits with PREEMPTED_EXIT_CODE on it.
"""

import contextlib
import signal
import threading

from absl import logging
import jax

# sysexits' EX_TEMPFAIL: "try again later", so schedulers can requeue the job.
PREEMPTED_EXIT_CODE = 75


class Preempted(BaseException):
  """Training stopped on a preemption notice after saving a checkpoint.

  A BaseException, as KeyboardInterrupt: a SIGTERM handler raises it
  wherever the program is, and no `except Exception` on the way (a cache
  read, a library) may swallow it.
  """


def _owns_sigterm() -> bool:
  """Whether a SIGTERM handler of ours may be installed: one process (with
  several, jax.distributed's own handler turns SIGTERM into its preemption
  sync point) and the main thread (Python's signal handlers live there)."""
  return (jax.process_count() == 1 and
          threading.current_thread() is threading.main_thread())


class PreemptionWatcher:
  """SIGTERM (single process) or JAX's preemption sync point (multi-process).

  With several processes, `jax.distributed` already turns SIGTERM and Cloud
  TPU's maintenance notices into a step every process agrees on
  (`reached_preemption`); our own handler would replace its handler, so it
  is installed only in a single process.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    if _owns_sigterm():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint after this step, then exiting.')
    self._flag.set()

  def signalled(self) -> bool:
    """Whether SIGTERM came (single process), stopped for or not yet."""
    return self._flag.is_set()

  def should_stop(self, step: int, checkpointer) -> bool:
    return self._flag.is_set() or checkpointer.reached_preemption(step)

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@contextlib.contextmanager
def sigterm_is_preemption(what: str, directory: str):
  """SIGTERM during `what` (after the last save) raises Preempted: exit 75.

  The final evaluation runs after the last checkpoint; a scheduler stopping
  the job then must see "try again", and the rerun finishes the evaluation
  from that checkpoint. Single process only, as `PreemptionWatcher`.
  """
  previous = None

  def on_sigterm(signum, frame):
    del signum, frame
    raise Preempted(f'SIGTERM during {what}: the checkpoints in {directory} '
                    '(if any) are complete; run the same command to go on.')

  if _owns_sigterm():
    previous = signal.signal(signal.SIGTERM, on_sigterm)
  try:
    yield
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
