"""Steady-state SimSiam train-step throughput (images/s) on synthetic batches.

Compiles the real sharded train step of a config, runs warm-up steps, then
times `--steps` steps over every local device. No input pipeline: this
measures the model, loss and optimiser only.

  .venv/bin/python benchmarks/train_step.py --config=configs/cifar10.py \
      --config.batch_size=128 --steps=10
"""

import json
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
FLAGS = flags.FLAGS


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
  print(json.dumps({
      'device': f'{jax.device_count()}x {jax.devices()[0].device_kind}',
      'depth': config.model.depth, 'stem': config.model.stem,
      'image_size': size, 'batch_size': config.batch_size,
      'dtype': config.model.dtype, 'first_step_s': round(compile_s, 1),
      'step_ms': round(1000 * dt, 1),
      'images_per_sec': round(config.batch_size / dt, 1)}))


if __name__ == '__main__':
  app.run(main)
