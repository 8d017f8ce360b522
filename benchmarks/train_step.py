"""Steady-state SimSiam train-step throughput (images/s) on synthetic batches.

Compiles the real sharded train step of a config, runs warm-up steps, then
times `--steps` steps over every local device. No input pipeline: this
measures the model, loss and optimiser only. Also reports the step's FLOPs
from XLA's cost analysis (per image, next to the analytic count in
REFERENCE.md: 49 GFLOP for ResNet-50 at 224, 6.8 for the ResNet-18 cifar
variant at 32), the achieved TFLOP/s, MFU against `--peak_tflops`, and the
peak device memory where the backend reports it.

  PYTHONPATH=. .venv/bin/python benchmarks/train_step.py --config=configs/cifar10.py \
      --config.batch_size=128 --steps=10 [--peak_tflops=989] \
      [--torch_python=.venv-torch/bin/python --torch_compile]

With --torch_python, the same step in PyTorch (benchmarks/torch_simsiam_step.py:
the official model, channels_last, autocast for bf16; `--torch_compile` adds
a torch.compile row) runs next, in that interpreter, with the same model,
image size, batch and dtype, and its rows are printed beside ours.
"""

import json
import os
import subprocess
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import train
from simsiam_jax.models import simsiam

config_flags.DEFINE_config_file('config', 'configs/cifar10.py', 'Config file.')
flags.DEFINE_integer('steps', 10, 'Timed steps.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
flags.DEFINE_float('peak_tflops', 0.0, 'Peak dense TFLOP/s of all devices '
                   'together for the dtype (H100 SXM bf16: 989); 0: no MFU.')
flags.DEFINE_string('torch_python', '', 'Python with torch + torchvision: '
                    'also time the PyTorch step.')
flags.DEFINE_bool('torch_compile', False, 'Add a torch.compile row.')
FLAGS = flags.FLAGS


def torch_rows(config):
  """The PyTorch step's JSON rows (eager, and compiled if asked)."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'torch_simsiam_step.py')
  args = [FLAGS.torch_python, script, f'--depth={config.model.depth}',
          f'--stem={config.model.stem}',
          f'--proj_layers={config.model.proj_layers}',
          f'--image_size={config.data.image_size}',
          f'--batch_size={config.batch_size}', f'--dtype={config.model.dtype}',
          f'--steps={FLAGS.steps}', f'--warmup={FLAGS.warmup}']
  rows = []
  for extra in ([], ['--compile']) if FLAGS.torch_compile else ([],):
    out = subprocess.run(args + extra, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
    rows.append(lines[-1] if lines else json.dumps(
        {'framework': 'pytorch', 'error': out.stderr[-1000:]}))
  return rows


def main(_):
  config = FLAGS.config
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, 100, 10_000)
  size = config.data.image_size
  shape = (size, size, config.data.channels)
  state = train.create_train_state(model, tx, jax.random.key(0), shape, mesh)
  step = train.make_train_step(config, mesh, schedule)
  rng = np.random.default_rng(0)
  local = config.batch_size // jax.process_count()
  batches = [parallel.host_to_global(
      {v: rng.standard_normal((local, *shape), np.float32)
       for v in ('view1', 'view2')}, mesh) for _ in range(2)]
  t = time.perf_counter()
  cost = step.lower(state, batches[0]).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', 0.0)) if cost else 0.0
  state, metrics = step(state, batches[0])
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t
  for i in range(FLAGS.warmup):
    state, metrics = step(state, batches[i % 2])
  jax.block_until_ready(metrics)
  t = time.perf_counter()
  for i in range(FLAGS.steps):
    state, metrics = step(state, batches[i % 2])
  jax.block_until_ready(metrics)
  dt = (time.perf_counter() - t) / FLAGS.steps
  # On one device XLA counts the whole step; sharded, each device's part.
  step_flops = flops * (mesh.devices.size if mesh.devices.size > 1 else 1)
  stats = jax.devices()[0].memory_stats() or {}
  extra = {
      'xla_gflop_per_image': round(step_flops / config.batch_size / 1e9, 2),
      'achieved_tflops': round(step_flops / dt / 1e12, 3),
      'peak_memory_gib': (round(stats['peak_bytes_in_use'] / 2**30, 2)
                          if 'peak_bytes_in_use' in stats else None),
  }
  if FLAGS.peak_tflops:
    extra['mfu'] = round(extra['achieved_tflops'] / FLAGS.peak_tflops, 4)
  print(json.dumps({
      'framework': f'simsiam_jax (jax {jax.__version__})',
      'device': f'{jax.device_count()}x {jax.devices()[0].device_kind}',
      'depth': config.model.depth, 'stem': config.model.stem,
      'image_size': size, 'batch_size': config.batch_size,
      'dtype': config.model.dtype, 'first_step_s': round(compile_s, 1),
      'step_ms': round(1000 * dt, 1),
      'images_per_sec': round(config.batch_size / dt, 1), **extra}),
        flush=True)
  if FLAGS.torch_python:
    del state, batches  # free the memory for PyTorch
    for row in torch_rows(config):
      print(row, flush=True)


if __name__ == '__main__':
  app.run(main)
