"""A run's workdir: created with its config, finished with its summary.

  WORKDIR/config.json       the run's config (written here)
  WORKDIR/summary.json      the final numbers (written here)
  WORKDIR/checkpoints/      Orbax checkpoints (checkpointing.py)
  WORKDIR/metrics.jsonl     every logged scalar, and TensorBoard events
                            (metrics_io.py)
  WORKDIR/*.png             one plot per logged curve (plot.py)

Paths may be local or gs://... (etils.epath).
"""

import datetime
import fcntl
import json
import os
import secrets
import socket

from absl import logging
from etils import epath

from simsiam_jax.configs import default

SUMMARY_FILE = 'summary.json'
CONFIG_FILE = 'config.json'
HISTORY_FILE = 'config_history.jsonl'
LOCK_FILE = '.lock'
CHECKPOINT_DIR = 'checkpoints'
RESUME_POLICIES = ('refuse', 'allow_changes')
# Fields a resumed run may change: they decide when things are logged,
# saved or evaluated, not what is trained. Prefixes end with '.'.
SAFE_TO_CHANGE = ('log_every_steps', 'checkpoint_every_steps',
                  'report_every_secs', 'resume_policy', 'knn.', 'eval.',
                  'probe.', 'checkpoint.', 'collapse.', 'data.data_dir',
                  'data.manual_dir', 'data.num_workers', 'data.cache')
# Fields a resumed run may raise (the run goes on for longer).
MAY_GROW = ('num_train_steps', 'num_epochs')
# Model fields that set only the initial values: a restored state replaces
# them. Every other model field decides the checkpoint's arrays: a change
# cannot resume, whatever the resume policy.
INIT_ONLY = ('model.head_init',)


class WorkdirError(OSError):
  """The workdir cannot be created or written."""


class WorkdirLocked(WorkdirError):
  """Another process owns the workdir."""


class ResumeRefused(ValueError):
  """The workdir holds a run of another config."""


_held = {}  # lock path -> (open file, run id), for this process's life


def claim(workdir: str) -> int:
  """Makes this process the workdir's one owner until it exits.

  An `fcntl` lock on WORKDIR/.lock, which records the holder (pid, host,
  start time, a random run id); the kernel drops it when the process ends,
  however it ends, so a lock is never stale. Claiming again from the same
  process is a no-op. gs:// workdirs cannot be locked and are not.

  Returns:
    The run id (0 for an unlocked gs:// workdir): the other processes of
    a multi-host run check it with `check_owner`.

  Raises:
    WorkdirLocked: another process holds it.
  """
  if '://' in str(workdir):
    logging.info('%s is not a local path: not locked.', workdir)
    return 0
  path = os.path.abspath(os.path.join(workdir, LOCK_FILE))
  if path in _held:
    return _held[path][1]
  f = open(path, 'a+')  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or '{}'
    f.close()
    try:
      h = json.loads(holder)
    except ValueError:
      h = {}
    raise WorkdirLocked(
        f'{workdir} is in use by pid {h.get("pid", "?")} on '
        f'{h.get("host", "?")} (since {h.get("started", "?")}): wait for that '
        'run to end (or stop it), or pass another --workdir.') from None
  run_id = secrets.randbits(31) or 1  # fits the int32 that process 0 broadcasts
  f.seek(0)
  f.truncate()
  f.write(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                      'started': _now(), 'run_id': run_id}))
  f.flush()
  _held[path] = (f, run_id)
  return run_id


def check_owner(workdir: str, run_id: int):
  """Checks, on a process other than 0, that the workdir is its run's.

  `run_id` is what process 0's `claim` returned. The lock file this
  process sees must carry it: otherwise the hosts do not share one
  workdir (a local path on each host) or another run holds it.

  Raises:
    WorkdirError: it is not this run's.
  """
  if not run_id:
    return
  path = os.path.join(workdir, LOCK_FILE)
  try:
    with open(path) as f:
      seen = json.loads(f.read() or '{}').get('run_id')
  except (OSError, ValueError, AttributeError):
    seen = None
  if seen != run_id:
    raise WorkdirError(
        f'{path} does not belong to this run (process 0 locked it as run '
        f'{run_id}; this process reads {seen}): every process must see the '
        'same shared --workdir (e.g. NFS or gs://), not a local folder '
        'of its own host.')


def _now() -> str:
  return datetime.datetime.now().isoformat(timespec='seconds')


def flatten(d: dict, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists become tuples (JSON or not, equal)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = tuple(v) if isinstance(v, list) else v
  return out


def _safe(field: str) -> bool:
  return any(field == p or (p.endswith('.') and field.startswith(p))
             for p in SAFE_TO_CHANGE)


def config_changes(saved: dict, new: dict) -> tuple[list, list]:
  """(refused, accepted): 'field: saved X, now Y' for the fields that differ.

  Fields present on one side only (added to or removed from the config
  since the run began) are neither: their defaults describe the old run.
  """
  old, cur = flatten(saved), flatten(new)
  refused, accepted = [], []
  for k in sorted(set(old) & set(cur)):
    if old[k] == cur[k]:
      continue
    line = f'{k}: saved {old[k]!r}, now {cur[k]!r}'
    grows = (k in MAY_GROW and isinstance(old[k], (int, float)) and
             isinstance(cur[k], (int, float)) and cur[k] >= old[k])
    (accepted if _safe(k) or grows else refused).append(line)
  return refused, accepted


def model_changes(saved: dict, new: dict) -> list:
  """(field, saved value, new value) for each model field that differs.

  These decide the checkpoint's arrays (`INIT_ONLY` aside): no resume
  policy can change them. A field that one config lacks takes the value of
  `default.MODEL_FIELDS_ADDED_LATER` (the network runs built before it
  existed); one missing there compares as None.
  """
  later = {f'model.{k}': v for k, v in default.MODEL_FIELDS_ADDED_LATER.items()}
  old = {**later, **flatten(saved.get('model', {}), 'model.')}
  cur = {**later, **flatten(new.get('model', {}), 'model.')}
  return [(k, old.get(k), cur.get(k)) for k in sorted(set(old) | set(cur))
          if old.get(k) != cur.get(k) and k not in INIT_ONLY]


def write_atomic(path: epath.Path, text: str):
  """Writes `path` whole or not at all: a temporary file, then a rename.

  A reader, or a later run after a kill, sees the old content or the new,
  never a truncated file.
  """
  path = epath.Path(path)
  tmp = path.parent / f'.{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}'
  try:
    tmp.write_text(text)
    tmp.replace(path)
  finally:
    if tmp.exists():
      tmp.unlink()


def _append(path: epath.Path, line: str):
  """Appends a line by rewriting the file atomically (gs:// has no append)."""
  old = path.read_text() if path.exists() else ''
  write_atomic(path, old + line + '\n')


def _has_run(path: epath.Path) -> bool:
  """A run began here: its config is saved and a checkpoint completed.

  An attempt killed during its first save leaves only a temporary
  checkpoint folder (`N.orbax-checkpoint-tmp-*`): nothing to resume, so
  the next start is a fresh one, with any config.
  """
  ckpt = path / CHECKPOINT_DIR
  return ((path / CONFIG_FILE).exists() and ckpt.is_dir() and
          any(p.name.isdigit() for p in ckpt.iterdir()))


def prepare(workdir: str, config) -> int:
  """Claims the workdir, checks that it holds this run, then saves `config`.

  A workdir whose run has begun (config.json and checkpoints) resumes only
  with the same config, up to the fields that are safe to change
  (`SAFE_TO_CHANGE`, `MAY_GROW`); `config.resume_policy='allow_changes'`
  accepts the rest. Nothing is written before that check. Every start
  appends its changes to config_history.jsonl; config.json is the config
  now in force.

  Process 0's job: callers check. No JAX here, so tools read workdirs cheaply.

  Returns:
    The run id from `claim`.

  Raises:
    WorkdirError: it cannot be created or written.
    WorkdirLocked: another process owns it.
    ResumeRefused: it holds a run of another config.
  """
  path = epath.Path(workdir)
  text = config.to_json_best_effort(indent=2)
  try:
    path.mkdir(parents=True, exist_ok=True)
    run_id = claim(workdir)
    event, refused, accepted, model = 'start', [], [], []
    corrupt = None
    if _has_run(path):
      event = 'resume'
      saved, corrupt = saved_config(path)
      new = json.loads(text)
      refused, accepted = config_changes(saved, new)
      model = [f'{k}: saved {a!r}, now {b!r}'
               for k, a, b in model_changes(saved, new)]
    policy = config.get('resume_policy', 'refuse')
    if policy not in RESUME_POLICIES:
      raise ResumeRefused(f'resume_policy must be one of {RESUME_POLICIES}, '
                          f'got {policy!r}.')
    if model:
      raise ResumeRefused(
          f'{workdir} holds checkpoints of another model: ' + '; '.join(model)
          + '. No resume policy can restore them: use a new --workdir or '
          'the saved model settings (config.json there). Nothing was written.')
    if refused and policy != 'allow_changes':
      raise ResumeRefused(
          f'{workdir} holds a run of another config: ' + '; '.join(refused)
          + '. Use a new --workdir, the saved values (config.json there), '
          'or --config.resume_policy=allow_changes to continue it changed '
          '(recorded in config_history.jsonl).')
    for line in accepted + refused:
      logging.warning('Resuming with a changed config: %s.', line)
    _append(path / HISTORY_FILE, json.dumps(
        {'time': _now(), 'event': event, 'pid': os.getpid(), 'policy': policy,
         'changed': accepted + refused}))
    if corrupt:
      (path / CONFIG_FILE).rename(path / f'{CONFIG_FILE}.corrupt-{stamp()}')
    write_atomic(path / CONFIG_FILE, text)
    return run_id
  except OSError as e:
    if isinstance(e, WorkdirError):
      raise
    raise WorkdirError(f'Cannot write to workdir {workdir!r} ({e}). Pass a '
                       'writable --workdir with free space.') from e


def stamp() -> str:
  """The time in the names of files moved aside (NAME.corrupt-STAMP)."""
  return datetime.datetime.now().strftime('%Y%m%d-%H%M%S')


def _read_json_dict(path: epath.Path) -> dict:
  value = json.loads(path.read_text())
  if not isinstance(value, dict) or not value:
    raise ValueError(f'not a JSON object: {type(value).__name__}')
  return value


def saved_config(path: epath.Path) -> tuple[dict, bool]:
  """(the config a run saved, whether config.json was unreadable).

  config.json, or when it is unreadable (truncated, corrupt) the config the
  newest readable checkpoint holds (STEP/config/metadata, Orbax's JSON).

  Raises:
    WorkdirError: neither can be read.
  """
  try:
    return _read_json_dict(path / CONFIG_FILE), False
  except (OSError, ValueError) as e:
    problem = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
  steps = sorted((int(p.name) for p in (path / CHECKPOINT_DIR).iterdir()
                  if p.name.isdigit()), reverse=True)
  for step in steps:
    try:
      saved = _read_json_dict(path / CHECKPOINT_DIR / str(step) / 'config' /
                              'metadata')
    except (OSError, ValueError):
      continue
    logging.warning('%s is unreadable (%s): the run\'s config is taken from '
                    'its checkpoint of step %d, and config.json is moved '
                    'aside when this start is accepted.',
                    path / CONFIG_FILE, problem, step)
    return saved, True
  raise WorkdirError(
      f'{path / CONFIG_FILE} is unreadable ({problem}) and no checkpoint '
      'holds a readable config: restore config.json, or move the '
      'checkpoints away to start afresh.')


def read_summary(workdir: str) -> dict | None:
  """summary.json of a finished run, or None."""
  path = epath.Path(workdir) / SUMMARY_FILE
  return json.loads(path.read_text()) if path.exists() else None


def write_summary(workdir: str, summary: dict):
  """Writes summary.json (process 0's job: callers check)."""
  write_atomic(epath.Path(workdir) / SUMMARY_FILE, json.dumps(summary, indent=2))
