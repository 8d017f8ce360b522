"""ImageNet's manual path, with a fake ImageNet in the real layout.

Both tars are checked before TFDS starts; a dataset prepared without a
split the config reads is refused with one line; one process of two
prepares a fresh data_dir while the other waits, and both train; a failure
on the preparing process stops both with one line; resident data refuse
images of varying size; `--config.mode=prepare` prepares and exits.
"""

import os
import subprocess
import sys

import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from configs import tiny  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import resident  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.data import tfds_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import imagenet_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import test_multiprocess as mp  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.conftest import REPO_ROOT  # pylint: disable=g-import-not-at-top,wrong-import-position

OVERRIDES = {'data.dataset': 'imagenet2012', 'data.eval_split': 'validation',
             'data.image_size': 16, 'data.shuffle_buffer': 32,
             'batch_size': 16, 'num_train_steps': 2, 'log_every_steps': 1,
             'checkpoint_every_steps': 2, 'knn.every_epochs': 0,
             'eval.batch_size': 8, 'knn.k': 5, 'knn.baselines': False}


def _config(tmp_path, manual):
  c = tiny.get_config()
  c.update_from_flattened_dict({**OVERRIDES,
                                'data.data_dir': str(tmp_path / 'tfds'),
                                'data.manual_dir': str(manual)})
  return c


def _prepared_versions(tmp_path):
  root = tmp_path / 'tfds' / 'imagenet2012'
  return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize('train,val,missing', [
    (False, True, 'ILSVRC2012_img_train.tar'),
    (True, False, 'ILSVRC2012_img_val.tar'),
    (False, False, 'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar')])
def test_a_missing_tar_is_one_line_and_nothing_is_prepared(tmp_path, train,
                                                           val, missing):
  imagenet_files.write(tmp_path / 'manual', train=train, val=val)
  with pytest.raises(errors.DatasetNotReady) as e:
    tfds_pipeline.get_builder(_config(tmp_path, tmp_path / 'manual').data)
  line = str(e.value)
  assert '\n' not in line
  assert line.startswith(f'imagenet2012: {missing} not in ')
  assert 'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar there' in line
  assert _prepared_versions(tmp_path) == []


def test_a_val_only_dataset_is_refused_until_rebuilt(tmp_path):
  manual = tmp_path / 'manual'
  imagenet_files.write(manual, train=False)
  config = _config(tmp_path, manual)
  # What TFDS alone does with the val tar: a complete-looking dataset.
  tfds.builder('imagenet2012', data_dir=config.data.data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  imagenet_files.write(manual, val=False)  # the train tar arrives
  with pytest.raises(errors.DatasetNotReady) as e:
    tfds_pipeline.get_builder(config.data)
  line = str(e.value)
  assert '\n' not in line
  assert "prepared without split(s) ['train'] (it has ['validation'])" in line
  assert 'remove that folder and prepare it again' in line
  # Removed, it prepares from both tars.
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(tmp_path / 'tfds' / 'imagenet2012')
  builder = tfds_pipeline.get_builder(config.data)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 3 * 6, 'validation': 8}


def test_resident_data_refuse_images_of_varying_size(tmp_path):
  imagenet_files.write(tmp_path / 'manual')
  config = _config(tmp_path, tmp_path / 'manual')
  config.data.resident, config.data.augment_on = True, 'device'
  with pytest.raises(errors.ResidentDataError,
                     match=r'images of shape \(None, None, 3\).*resident=False'):
    resident.load_uint8(config, 'train')


def _cli(args, tmp_path):
  return subprocess.run(
      [sys.executable, '-m', 'simsiam_jax.main', '--config=configs/tiny.py',
       *[f'--config.{k}={v}' for k, v in OVERRIDES.items()], *args],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_prepare_mode_prepares_and_exits_and_says_what_is_missing(tmp_path):
  manual = tmp_path / 'manual'
  imagenet_files.write(manual, val=False)
  flags = [f'--config.data.data_dir={tmp_path / "tfds"}',
           f'--config.data.manual_dir={manual}', '--config.mode=prepare']
  bad = _cli(flags, tmp_path)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].endswith(
      'DatasetNotReady: imagenet2012: ILSVRC2012_img_val.tar not in '
      f'{manual}; TFDS needs ILSVRC2012_img_train.tar and '
      'ILSVRC2012_img_val.tar there (from image-net.org) before it prepares '
      'anything.')
  imagenet_files.write(manual, train=False)
  good = _cli(flags, tmp_path)  # no --workdir: none is needed
  assert good.returncode == 0, good.stderr[-3000:]
  assert "'splits': {'train': 18, 'validation': 8}" in good.stderr
  assert _prepared_versions(tmp_path) == ['5.1.0']


def _two_processes(tmp_path, manual):
  port = mp._free_port()  # pylint: disable=protected-access
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
  flags = [f'--config.data.data_dir={tmp_path / "tfds"}',
           f'--config.data.manual_dir={manual}',
           f'--workdir={tmp_path / "run"}',
           f'--coordinator_address=localhost:{port}', '--num_processes=2']
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'simsiam_jax.main', '--config=configs/tiny.py',
       *[f'--config.{k}={v}' for k, v in OVERRIDES.items()], *flags,
       f'--process_id={i}'], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  logs = [p.communicate(timeout=600)[1] for p in procs]
  return [p.returncode for p in procs], logs


@pytest.mark.slow
def test_two_processes_on_a_fresh_data_dir_one_prepares_both_train(tmp_path):
  manual = tmp_path / 'manual'
  imagenet_files.write(manual)
  rcs, logs = _two_processes(tmp_path, manual)
  assert rcs == [0, 0], [log[-3000:] for log in logs]
  assert 'Preparing imagenet2012 once in' in logs[0]
  assert 'Preparing imagenet2012' not in logs[1]
  assert 'Process 1 waits for process 0 to prepare imagenet2012' in logs[1]
  assert (tmp_path / 'run' / 'summary.json').exists()
  assert _prepared_versions(tmp_path) == ['5.1.0']


@pytest.mark.slow
def test_a_failure_on_the_preparing_process_stops_both_with_one_line(
    tmp_path):
  manual = tmp_path / 'manual'
  imagenet_files.write(manual, val=False)
  rcs, logs = _two_processes(tmp_path, manual)
  assert rcs == [2, 2], [log[-3000:] for log in logs]
  assert logs[0].strip().splitlines()[-1].endswith(
      f'ILSVRC2012_img_val.tar not in {manual}; TFDS needs '
      'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar there (from '
      'image-net.org) before it prepares anything.')
  assert logs[1].strip().splitlines()[-1].endswith(
      'DatasetNotReady: process 0 could not prepare imagenet2012: '
      f'DatasetNotReady: imagenet2012: ILSVRC2012_img_val.tar not in {manual}'
      '; TFDS needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar there '
      '(from image-net.org) before it prepares anything.')


def test_split_names_are_the_base_names():
  c = tiny.get_config().data
  c.train_split, c.eval_split = 'train[:10%]', 'validation[50%:]+train[:1]'
  assert prepare.split_names(c) == ['train', 'validation']


# What the README's commands need to run here in seconds: small sizes only.
SMALL = {
    'pretrain': ['--config.batch_size=16', '--config.num_train_steps=2',
                 '--config.log_every_steps=1', '--config.data.image_size=32',
                 '--config.model.depth=18', '--config.model.width=8',
                 '--config.model.proj_hidden_dim=32',
                 '--config.model.proj_dim=32', '--config.model.pred_hidden_dim=8',
                 '--config.eval.batch_size=8', '--config.knn.k=5',
                 '--config.knn.baselines=False', '--config.data.shuffle_buffer=32',
                 '--config.model.dtype=float32'],
    'linear': ['--config.batch_size=16', '--config.num_train_steps=2',
               '--config.log_every_steps=1', '--config.data.image_size=32',
               '--config.eval.batch_size=8', '--config.data.shuffle_buffer=32'],
    'prepare': [],
}


def readme_imagenet_commands() -> list[str]:
  """The README's ImageNet commands, continuation lines joined."""
  with open(os.path.join(REPO_ROOT, 'README.md')) as f:
    text = f.read()
  block = text.split('<!-- imagenet-commands')[1].split('```bash\n')[1]
  block = block.split('```')[0].replace('\\\n', ' ')
  return [' '.join(line.split()) for line in block.splitlines()
          if line.startswith('python ')]


@pytest.mark.slow
def test_the_readme_imagenet_commands_run(tmp_path):
  manual = tmp_path / 'manual'
  imagenet_files.write(manual)
  commands = readme_imagenet_commands()
  assert len(commands) == 3
  for command in commands:
    kind = ('prepare' if 'mode=prepare' in command else
            'linear' if 'linear' in command else 'pretrain')
    command = (command.replace('/data/imagenet', str(manual))
               .replace('/shared/tfds', str(tmp_path / 'tfds'))
               .replace('/shared/runs', str(tmp_path / 'runs')))
    args = command.split()[1:] + SMALL[kind]
    done = subprocess.run([sys.executable, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (command, done.stderr[-3000:])
  assert _prepared_versions(tmp_path) == ['5.1.0']
  summary = (tmp_path / 'runs' / 'r50_linear' / 'summary.json').read_text()
  assert 'linear_top1' in summary


def test_the_launch_readme_prepares_with_the_tested_command():
  with open(os.path.join(REPO_ROOT, 'launch', 'README.md')) as f:
    block = f.read().split('```bash\n')[1].split('```')[0]
  command = ' '.join(block.replace('\\\n', ' ').split())
  assert command == readme_imagenet_commands()[0]
