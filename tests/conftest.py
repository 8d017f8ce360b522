"""Test set-up: 8 simulated CPU devices, configured before JAX starts."""

import os
import subprocess
import sys
import tempfile

# Must run before the first `import jax` anywhere in the test session.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One persistent compilation cache for the session and the training
# subprocesses it starts: they compile the same tiny train step many times.
# Results are the same with or without it; only compile time changes.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), f'simsiam_jax_test_cache_{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session', autouse=True)
def eight_devices():
  assert jax.device_count() == 8, (
      'tests expect 8 simulated devices; XLA_FLAGS was set too late')


def hold_workdir(workdir, seconds=120):
  """A process that claims `workdir` and sleeps; returned once it holds it."""
  code = ('import sys, time\n'
          'from simsiam_jax import workdir\n'
          'workdir.claim(sys.argv[1])\n'
          'print("held", flush=True)\n'
          f'time.sleep({seconds})\n')
  proc = subprocess.Popen([sys.executable, '-c', code, str(workdir)],
                          cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, 'PYTHONPATH': REPO_ROOT})
  assert proc.stdout.readline().strip() == 'held'
  return proc
