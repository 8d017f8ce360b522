"""Command line: flags, distributed start-up, then one call.

  python -m simsiam_jax.main --config=configs/imagenet.py --workdir=DIR \
      [--config.batch_size=256 ...]
  simsiam-jax --config=simsiam_jax.configs.imagenet:gpu8 --workdir=DIR

`--config` takes a config file, or after `pip install` the module of a
built-in recipe (`simsiam_jax.configs.NAME`, the checkout's configs/ folder)
or of any importable config module; `:variant` follows either.

Multi-process: start the same command on every host. Multi-host Cloud TPU
slices and SLURM jobs with several tasks are detected
(parallel.initialize_distributed); elsewhere pass --coordinator_address,
--num_processes and --process_id (or the JAX_* environment variables), or
set SIMSIAM_DISTRIBUTED=1 where `jax.distributed.initialize()` needs no
arguments.
"""

import importlib.util
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from simsiam_jax import checkpointing
from simsiam_jax import classify
from simsiam_jax import config_check
from simsiam_jax import errors
from simsiam_jax import parallel
from simsiam_jax import preemption
from simsiam_jax import pretrained
from simsiam_jax import train
from simsiam_jax import workdir as workdir_lib
from simsiam_jax.data import errors as data_errors
from simsiam_jax.data import sources
from simsiam_jax.evaluation import collapse
from simsiam_jax.evaluation import probe

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/imagenet.py) or module '
    '(simsiam_jax.configs.imagenet), then :variant if any.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where logs, checkpoints and summaries go.')
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0.')
flags.DEFINE_integer('num_processes', 0, 'Number of processes (multi-host).')
flags.DEFINE_integer('process_id', -1, 'Index of this process (multi-host).')
flags.DEFINE_bool('library_logs', False, 'Also show the INFO lines of the '
                  'libraries (Orbax, clu, TFDS) and the tracebacks of their '
                  'file system errors; by default only their warnings and '
                  'errors are shown.')
flags.mark_flags_as_required(['config'])

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class _OwnInfoOnly(std_logging.Filter):
  """Passes this package's records and other code's warnings and errors.

  Orbax, clu and TFDS log through absl at INFO (checkpoint manager
  internals, one metric-writer line per log step): dozens of lines between
  the progress lines. Warnings and errors still pass; a library's error
  about a file system failure (a failed background checkpoint write: Orbax
  logs it from three threads, 230 lines) keeps its message but not its
  traceback, as this package's own line says what failed and what is
  intact. `--library_logs` shows everything.
  """

  def filter(self, record):
    own = os.path.abspath(record.pathname).startswith(_PACKAGE_DIR)
    if not own and record.exc_info and _storage_error(record.exc_info[1]):
      record.exc_info, record.exc_text = None, None
      record.msg = f'{record.msg} (traceback: --library_logs)'
    return record.levelno >= std_logging.WARNING or own


# How tensorstore (Orbax's storage layer) reports a failed read or write: a
# ValueError whose message starts with the status code.
_STORAGE_STATUS = ('RESOURCE_EXHAUSTED:', 'PERMISSION_DENIED:', 'NOT_FOUND:',
                   'UNAVAILABLE:', 'DATA_LOSS:', 'DEADLINE_EXCEEDED:')


def _storage_error(e: BaseException | None) -> bool:
  """Whether `e`, or an exception it was raised from, is a storage failure."""
  while e is not None:
    if isinstance(e, OSError) or (
        isinstance(e, ValueError) and str(e).startswith(_STORAGE_STATUS)):
      return True
    e = e.__cause__ or e.__context__
  return False


def _closed_event_loop(e: BaseException | None) -> bool:
  return isinstance(e, RuntimeError) and str(e) == 'Event loop is closed'


def _quiet_closed_event_loops(excepthook, unraisablehook):
  """(sys.excepthook, sys.unraisablehook) that drop 'Event loop is closed'.

  After a failed background checkpoint write, Orbax closes its event loop
  while tensorstore's threads still deliver results to it; each delivery
  reports asyncio's RuntimeError with its traceback (through either hook,
  dozens of times) before this package's own line about the failed write.
  Every other exception goes to the hooks given.
  """
  def quiet_excepthook(kind, value, tb):
    if not _closed_event_loop(value):
      excepthook(kind, value, tb)

  def quiet_unraisablehook(unraisable):
    if not _closed_event_loop(unraisable.exc_value):
      unraisablehook(unraisable)

  return quiet_excepthook, quiet_unraisablehook

MODES = {'pretrain': train.train_and_evaluate,
         'knn_eval': pretrained.knn_eval,
         'linear': classify.train_and_evaluate,
         'finetune': classify.train_and_evaluate,
         'fast_probe': probe.evaluate_checkpoint,
         'prepare': sources.prepare_mode}
# Errors a user can fix: one clear line and exit code 2, no traceback.
USER_ERRORS = (errors.ConfigError, checkpointing.ConfigMismatch,
               data_errors.DatasetNotReady, data_errors.ResidentDataError,
               FloatingPointError, workdir_lib.WorkdirError,
               workdir_lib.ResumeRefused,
               checkpointing.CheckpointWriteError, collapse.Collapsed,
               pretrained.PretrainedNotFound)


def main(argv):
  if len(argv) > 1:
    sys.stderr.write(f'FATAL Unexpected arguments: {" ".join(argv[1:])} '
                     '(flags take the form --name=value).\n')
    raise SystemExit(2)
  if not FLAGS.library_logs:
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
    sys.excepthook, sys.unraisablehook = _quiet_closed_event_loops(
        sys.excepthook, sys.unraisablehook)
  parallel.initialize_distributed(FLAGS.coordinator_address,
                                  FLAGS.num_processes, FLAGS.process_id)
  config = FLAGS.config
  try:
    # SIGTERM outside the training steps (start-up, compiling, the final
    # evaluation) is a preemption too: exit 75, "try again". Training's own
    # watcher, inside, saves first.
    with preemption.sigterm_is_preemption('start-up or evaluation',
                                          FLAGS.workdir):
      if config.mode not in MODES:
        raise errors.ConfigError(f'config.mode must be one of '
                                 f'{sorted(MODES)}, got {config.mode!r}.')
      if not FLAGS.workdir and config.mode != 'prepare':
        raise errors.ConfigError(
            f'--workdir is required (mode {config.mode!r}); only '
            '--config.mode=prepare runs without one.')
      config_check.check(config)
      # After the checks, so that a config error is the last line shown.
      logging.info('Config:\n%s', config)
      summary = MODES[config.mode](config, FLAGS.workdir)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    raise SystemExit(preemption.PREEMPTED_EXIT_CODE) from e
  except USER_ERRORS as e:
    logging.error('%s: %s', type(e).__name__, e)
    if isinstance(e, checkpointing.CheckpointWriteError):
      # Orbax's failed background save leaves threads that wait minutes
      # for a signal that never comes, and would hold the exit: the
      # checkpoints on disk are complete, so leave now.
      logging.flush()
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(2)  # pylint: disable=protected-access
    raise SystemExit(2) from e
  if jax.process_index() == 0:
    logging.info('Done: %s', summary)


def _one_line(e: Exception) -> str:
  """An exception's message on one line (ml_collections nests a KeyError)."""
  while e.args and isinstance(e.args[0], Exception):
    e = e.args[0]
  text = (str(e.args[0]) if e.args else str(e)).strip()
  if isinstance(e, KeyError) and text.startswith("'") and "'" in text[1:]:
    end = text.index("'", 1)  # 'name'\nDid you mean "..."?
    text = f'no config field {text[:end + 1]}. {text[end + 1:]}'
  return ' '.join(text.split())


def config_file(value: str) -> str:
  """`--config`'s value with a module name replaced by the module's file.

  'configs/tiny.py:v' stays as it is; 'simsiam_jax.configs.tiny:v' becomes
  '/site-packages/simsiam_jax/configs/tiny.py:v'.

  Raises:
    errors.ConfigError: neither a file nor an importable module.
  """
  path, sep, variant = value.partition(':')
  if os.path.exists(path):
    return value
  dotted = all(p.isidentifier() for p in path.split('.'))
  try:
    spec = importlib.util.find_spec(path) if dotted else None
  except ImportError:
    spec = None
  if spec is None or not spec.has_location:
    what = f'no file {os.path.abspath(path)}' + (
        f' and no module {path!r}' if dotted else '')
    raise errors.ConfigError(
        f'--config={value}: {what}. Built-in recipes: '
        f'simsiam_jax.configs.NAME, NAME in {", ".join(builtin_configs())}.')
  return spec.origin + sep + variant


def builtin_configs() -> list[str]:
  """Names of the recipes shipped in simsiam_jax.configs."""
  folder = os.path.join(_PACKAGE_DIR, 'configs')
  names = []
  for f in sorted(os.listdir(folder)):
    if f.endswith('.py') and not f.startswith('_'):
      with open(os.path.join(folder, f), encoding='utf-8') as source:
        if 'def get_config(' in source.read():
          names.append(f[:-3])
  return names


def _with_config_file(argv):
  """argv with `--config`'s value passed through `config_file`."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      argv[i] = '--config=' + config_file(arg[len('--config='):])
    elif arg == '--config' and i + 1 < len(argv):
      argv[i + 1] = config_file(argv[i + 1])
  return argv


def parse_flags(argv):
  """absl's flag parsing, with a bad --config or override as one line, exit 2."""
  try:
    return FLAGS(_with_config_file(argv))
  except errors.ConfigError as e:
    sys.stderr.write(f'ConfigError: {e}\n')
  except flags.Error as e:
    sys.stderr.write(f'FATAL Flags parsing error: {_one_line(e)} '
                     '(--helpfull lists the flags).\n')
  except SyntaxError as e:
    sys.stderr.write(f'ConfigError: {e.filename}, line {e.lineno}: {e.msg}\n')
  except (AttributeError, KeyError, TypeError, ValueError, ImportError,
          NameError) as e:
    sys.stderr.write(f'ConfigError: {_one_line(e)}\n')
  raise SystemExit(2)


def run():
  """The `simsiam-jax` console script: `python -m simsiam_jax.main`."""
  # absl's --help shows the __main__ module's text and flags; under the
  # console script that is the script, so lend it this module's.
  for flag in FLAGS.get_key_flags_for_module(__name__):
    FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  if not sys.modules['__main__'].__doc__:
    sys.modules['__main__'].__doc__ = __doc__
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
