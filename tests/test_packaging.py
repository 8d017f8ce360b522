"""The package as others use it: requirements, pins, public API, README, wheel."""

import functools
import os
import re
import shutil
import subprocess
import sys
import tomllib

import jax
import numpy as np
from packaging import requirements
from packaging import version
import pytest

import simsiam_jax
from simsiam_jax import errors
from simsiam_jax import main
from simsiam_jax import train
from simsiam_jax.configs import tiny
from simsiam_jax.data import device_augment
from tests.conftest import REPO_ROOT


def _pyproject():
  with open(os.path.join(REPO_ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']


def _lines(name):
  with open(os.path.join(REPO_ROOT, name), encoding='utf-8') as f:
    return [l.strip() for l in f if l.strip() and not l.startswith('#')]


def test_requirements_txt_is_pyproject_with_its_checkout_extras():
  project = _pyproject()
  extras = project['optional-dependencies']
  want = project['dependencies'] + extras['data'] + extras['plots'] + extras[
      'test']
  assert _lines('requirements.txt') == want
  assert extras['all'] == ['simsiam-jax[data,plots,test]']


def test_constraints_pin_every_requirement_within_its_bounds():
  pins = {}
  for line in _lines('constraints.txt'):
    name, _, pinned = line.partition('==')
    pins[requirements.Requirement(name).name.lower().replace('_', '-')] = (
        version.Version(pinned))
  for line in _lines('requirements.txt'):
    req = requirements.Requirement(line)
    pinned = pins.get(req.name.lower().replace('_', '-'))
    assert pinned is not None, f'{req.name} has no pin in constraints.txt'
    assert req.specifier.contains(pinned), (req, pinned)


def test_importing_the_package_and_a_config_loads_no_framework():
  code = ('import sys, simsiam_jax\n'
          'from simsiam_jax.configs import imagenet\n'
          'imagenet.get_config("gpu8")\n'
          'print(sorted(m for m in ("jax", "flax", "tensorflow") '
          'if m in sys.modules))\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'PYTHONPATH': REPO_ROOT})
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '[]'


def test_every_public_name_resolves_to_its_object():
  from simsiam_jax import losses  # pylint: disable=g-import-not-at-top
  from simsiam_jax.models import simsiam  # pylint: disable=g-import-not-at-top
  for name in simsiam_jax.__all__:
    assert getattr(simsiam_jax, name) is not None, name
  assert simsiam_jax.simsiam_loss is losses.simsiam_loss
  assert simsiam_jax.create_model is simsiam.create_model
  assert 'load_backbone' in dir(simsiam_jax)
  with pytest.raises(AttributeError):
    getattr(simsiam_jax, 'no_such_name')


def test_config_accepts_a_file_or_a_module():
  path = main.config_file('simsiam_jax.configs.imagenet:gpu8')
  assert path == os.path.join(REPO_ROOT, 'simsiam_jax', 'configs',
                              'imagenet.py') + ':gpu8'
  assert main.config_file('configs/tiny.py') == 'configs/tiny.py'
  for bad in ('configs/nope.py', 'simsiam_jax.configs.nope', 'nope.nope'):
    with pytest.raises(errors.ConfigError, match='Built-in recipes'):
      main.config_file(bad)
  assert 'imagenet' in main.builtin_configs()
  assert 'linear_common' not in main.builtin_configs()  # no get_config


def test_a_missing_config_is_one_line_and_exit_2(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'simsiam_jax.main', '--config=configs/nope.py',
       f'--workdir={tmp_path / "w"}'], cwd=REPO_ROOT, capture_output=True,
      text=True, timeout=120)
  assert out.returncode == 2
  assert out.stderr.startswith('ConfigError: --config=configs/nope.py: no '
                               'file'), out.stderr[-2000:]
  assert len(out.stderr.strip().splitlines()) == 1
  assert not (tmp_path / 'w').exists()


def test_two_views_are_what_the_train_step_draws():
  config = tiny.get_config()
  images = np.random.default_rng(0).integers(0, 256, (6, 20, 20, 3), np.uint8)
  key = jax.random.key(3)
  v1, v2 = jax.jit(functools.partial(simsiam_jax.two_views, config=config))(
      images, key)
  assert v1.shape == v2.shape == (6, 16, 16, 3)
  assert not np.allclose(v1, v2)
  again = jax.jit(lambda x, k: device_augment.augment_batch(
      x, jax.random.fold_in(k, 1), config.data.aug, crop_size=16))(images, key)
  np.testing.assert_allclose(np.asarray(v2), np.asarray(again), atol=1e-6)


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
  """A folder holding a finished tiny run at workdirs/demo, as the README has it."""
  root = tmp_path_factory.mktemp('library')
  train.train_and_evaluate(tiny.get_config(), str(root / 'workdirs' / 'demo'))
  return root


def test_backbone_features_are_the_module_on_normalised_images(demo_dir):
  backbone = simsiam_jax.load_backbone(str(demo_dir / 'workdirs' / 'demo'))
  module, variables = backbone
  assert backbone.step == 4
  images = np.random.default_rng(1).integers(0, 256, (7, 16, 16, 3), np.uint8)
  x = device_augment.network_input(jax.numpy.asarray(images),
                                   backbone.config.data.aug)
  want = np.asarray(module.apply(variables, x, train=False))
  # In batches of 3 (the last one padded) as in one batch: the same rows.
  np.testing.assert_allclose(backbone.features(images, batch_size=3), want,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(backbone.features(images), want, rtol=1e-5,
                             atol=1e-5)


def _readme_snippet():
  with open(os.path.join(REPO_ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  section = text[text.index('## Use as a library'):]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_the_readme_library_snippet_runs(demo_dir):
  (demo_dir / 'snippet.py').write_text(_readme_snippet())
  out = subprocess.run([sys.executable, 'snippet.py'], cwd=demo_dir,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONPATH': REPO_ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  loss = float(re.search(r'^loss (\S+)$', out.stdout, re.M).group(1))
  assert -1.0 <= loss <= 1.0
  # The tiny run's backbone: width 8, so 64-d features; its last step 4.
  assert 'features (16, 64) from step 4' in out.stdout


def _fresh_venv_with_the_wheel(tmp_path):
  """A new venv holding only the built wheel; the checkout's .venv lends deps."""
  src = tmp_path / 'src'
  shutil.copytree(REPO_ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
      '.venv*', '.git', 'workdirs', 'build', 'dist', '*.egg-info',
      '.pytest_cache', '__pycache__'))
  pip = [sys.executable, '-m', 'pip']
  subprocess.run(pip + ['wheel', '-q', '--no-deps', '--no-build-isolation',
                        '-w', str(tmp_path / 'dist'), str(src)], check=True,
                 timeout=300)
  wheel, = (tmp_path / 'dist').glob('simsiam_jax-*.whl')
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True,
                 timeout=300)
  site, = venv.glob('lib/python*/site-packages')
  deps = [p for p in sys.path if p.endswith('site-packages')]
  (site / 'lent_deps.pth').write_text('\n'.join(deps) + '\n')
  subprocess.run([venv / 'bin' / 'pip', 'install', '-q', '--no-deps',
                  '--no-index', str(wheel)], check=True, timeout=300)
  return venv


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path):
  venv = _fresh_venv_with_the_wheel(tmp_path)
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}

  def run(*cmd):
    return subprocess.run([str(c) for c in cmd], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)

  # The wheel's own requirements are met by what is installed (other
  # packages' complaints, such as the fresh venv's old setuptools, aside).
  check = run(venv / 'bin' / 'pip', 'check')
  assert 'simsiam' not in (check.stdout + check.stderr).lower(), check.stdout
  listed = run(venv / 'bin' / 'pip', 'show', 'simsiam-jax')
  assert 'Requires: absl-py, clu, dm-pix' in listed.stdout, listed.stdout
  where = run(venv / 'bin' / 'python', '-c',
              'import simsiam_jax; print(simsiam_jax.__file__); '
              'print(simsiam_jax.ResNet, simsiam_jax.load_backbone)')
  assert where.returncode == 0, where.stderr[-2000:]
  assert where.stdout.startswith(str(venv)), where.stdout
  helped = run(venv / 'bin' / 'simsiam-jax', '--help')
  # absl's --help exits 1, as `python -m simsiam_jax.main --help` does.
  assert '--config: Config file' in helped.stdout, helped.stdout[-2000:]
  assert '--workdir' in helped.stdout
  trained = run(venv / 'bin' / 'simsiam-jax',
                '--config=simsiam_jax.configs.tiny', '--workdir=w')
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert (elsewhere / 'w' / 'summary.json').exists()
