"""launch/ scripts in DRY_RUN=1 mode: the exact commands they would run."""

import os
import subprocess

import pytest

from tests.conftest import REPO_ROOT

TPU_ENV = {'TPU_NAME': 'pod1', 'ZONE': 'us-central2-b',
           'ACCELERATOR_TYPE': 'v4-32', 'PROJECT': 'proj',
           'WORKDIR': '/mnt/shared/run1', 'EXTRA_FLAGS': '--config.num_epochs=2'}


def _dry(script, **env):
  full = {**os.environ, 'DRY_RUN': '1', **env}
  result = subprocess.run(['bash', os.path.join(REPO_ROOT, 'launch', script)],
                          capture_output=True, text=True, env=full, timeout=60,
                          cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr
  return [line for line in result.stdout.splitlines() if line.startswith('+')]


def test_tpu_create_and_delete():
  (create,) = _dry('tpu/create.sh', **TPU_ENV)
  assert create.startswith('+ gcloud compute tpus tpu-vm create pod1')
  for flag in ('--zone=us-central2-b', '--project=proj',
               '--accelerator-type=v4-32', '--preemptible'):
    assert flag in create
  (create,) = _dry('tpu/create.sh', **TPU_ENV, PREEMPTIBLE='0')
  assert '--preemptible' not in create
  (delete,) = _dry('tpu/delete.sh', **TPU_ENV)
  assert delete.startswith('+ gcloud compute tpus tpu-vm delete pod1')
  assert '--quiet' in delete


def test_tpu_setup_and_run_on_every_worker():
  (setup,) = _dry('tpu/setup.sh', **TPU_ENV)
  assert '--worker=all' in setup and 'make install' in setup
  assert 'jax[tpu]' in setup
  (run,) = _dry('tpu/run.sh', **TPU_ENV)
  assert run.startswith('+ gcloud compute tpus tpu-vm ssh pod1')
  assert '--worker=all' in run
  for part in ('SIMSIAM_DISTRIBUTED=1', 'simsiam_jax.main',
               '--config=configs/imagenet.py:tpu_v4_32',
               '--workdir=/mnt/shared/run1', '--config.num_epochs=2'):
    assert part in run, part


def test_gpu_single_node():
  lines = _dry('gpu/single_node.sh', WORKDIR='/tmp/w')
  assert lines[0] == '+ make install'
  assert 'jax\\[cuda12\\]' in lines[1]
  assert 'simsiam_jax.main --config=configs/imagenet.py:gpu8 --workdir=/tmp/w' in lines[2]


def test_slurm_scales_the_batch_with_the_nodes():
  (srun,) = _dry('gpu/slurm.sbatch', SLURM_JOB_NUM_NODES='4')
  assert srun.startswith('+ srun')
  assert 'SIMSIAM_DISTRIBUTED=1' in srun
  assert '--config.batch_size=2048' in srun


@pytest.mark.parametrize('variant,devices', [('tpu_v4_32', 16), ('gpu8', 8)])
def test_topology_variants_divide_the_batch(variant, devices):
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  c = imagenet.get_config(variant)
  assert c.batch_size % devices == 0
  assert c.model.dtype == 'bfloat16' and c.model.param_dtype == 'float32'


def test_missing_setting_is_a_clear_error():
  env = {k: v for k, v in os.environ.items() if k != 'WORKDIR'}
  result = subprocess.run(['bash', 'launch/tpu/run.sh'], capture_output=True,
                          text=True, env={**env, 'DRY_RUN': '1'}, timeout=60,
                          cwd=REPO_ROOT)
  assert result.returncode == 2
  assert 'set WORKDIR' in result.stderr
