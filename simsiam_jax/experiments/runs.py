"""Resumable subprocess jobs: one `simsiam_jax.main` run per workdir.

A job is a command that writes WORKDIR/summary.json when it succeeds. Its
output is appended to WORKDIR.log and its record to WORKDIR.status.json, so
a rerun skips what finished, resumes what was interrupted (the trainer
restores its checkpoints) and leaves what failed as failed.
"""

import datetime
import json
import os
import shlex
import signal
import subprocess
import time

from simsiam_jax import workdir as workdir_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SUMMARY_FILE = workdir_lib.SUMMARY_FILE
# preemption.PREEMPTED_EXIT_CODE (importing it would start JAX):
# the run saved a checkpoint on SIGTERM and can resume.
PREEMPTED_EXIT_CODE = 75


def execute(command: list[str], log_path: str) -> int:
  """Runs `command` from the repository root, output appended to `log_path`.

  Returns its exit code. On Ctrl-C or SIGTERM the run is sent SIGTERM (it
  saves a checkpoint and exits) and waited for before this re-raises.
  """
  with open(log_path, 'a') as log:
    log.write(f'# {datetime.datetime.now():%Y-%m-%d %H:%M:%S} '
              f'{shlex.join(command)}\n')
    log.flush()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
      return proc.wait()
    except BaseException:
      proc.send_signal(signal.SIGTERM)
      proc.wait()
      raise


def last_line(log_path: str) -> str:
  """The last non-empty line of a log ('' if none)."""
  if not os.path.exists(log_path):
    return ''
  with open(log_path, 'rb') as f:
    f.seek(max(0, os.path.getsize(log_path) - 8192))
    lines = [l for l in f.read().decode(errors='replace').splitlines()
             if l.strip()]
  return lines[-1].strip() if lines else ''


def read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_json(path: str, value):
  """Written whole or not at all (a killed command leaves no half file)."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, SUMMARY_FILE))


def run_job(command: list[str], workdir: str, retry_failed: bool) -> dict:
  """Runs one job unless it finished (or failed) before.

  Returns its record, also in WORKDIR.status.json: 'status' ('done',
  'failed' or 'interrupted'), 'returncode', 'wall_s' (summed over attempts),
  'attempts', 'last_log_line' and 'command'; 'skipped' if it did not run.
  """
  status_path, log_path = workdir + '.status.json', workdir + '.log'
  status = read_json(status_path)
  if finished(workdir):
    return {**status, 'status': 'done', 'skipped': True}
  if status.get('status') == 'failed' and not retry_failed:
    return {**status, 'skipped': True}
  status = {'command': shlex.join(command),
            'wall_s': status.get('wall_s', 0.0),
            'attempts': status.get('attempts', 0) + 1}
  start = time.perf_counter()
  try:
    rc = execute(command, log_path)
  except BaseException:
    status.update(status='interrupted', last_log_line=last_line(log_path),
                  wall_s=status['wall_s'] + time.perf_counter() - start)
    write_json(status_path, status)
    raise
  if rc == 0 and finished(workdir):
    outcome = 'done'
  elif rc == PREEMPTED_EXIT_CODE:
    outcome = 'interrupted'
  else:
    outcome = 'failed'
  status.update(status=outcome, returncode=rc,
                wall_s=status['wall_s'] + time.perf_counter() - start,
                last_log_line=last_line(log_path))
  write_json(status_path, status)
  return status


def collect(run_dir: str, probe_dir: str) -> dict:
  """What a pretraining run and its probe wrote, or what stopped them."""
  summary = read_json(os.path.join(run_dir, SUMMARY_FILE))
  probe = read_json(os.path.join(probe_dir, SUMMARY_FILE))
  status = read_json(run_dir + '.status.json')
  probe_status = read_json(probe_dir + '.status.json')
  return {
      'status': 'done' if summary else status.get('status', 'pending'),
      'probe_status': ('done' if probe
                       else probe_status.get('status', 'pending')),
      'knn_top1': summary.get('knn_top1'),
      'probe_top1': probe.get('probe_top1'),
      'collapse_std': summary.get('collapse_std'),
      'loss': summary.get('loss'),
      # Wall time of the subprocesses; a summary without a record (a run
      # made by hand) has the trainer's own clock.
      'wall_s': status.get('wall_s', summary.get('wall_time_s')),
      'probe_wall_s': probe_status.get('wall_s'),
      'returncode': status.get('returncode'),
      'probe_returncode': probe_status.get('returncode'),
      'last_log_line': status.get('last_log_line', ''),
      'probe_last_log_line': probe_status.get('last_log_line', ''),
      'command': status.get('command', '')}
