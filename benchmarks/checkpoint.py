"""Checkpoint save/restore time and size for the ImageNet ResNet-50 SimSiam state.

  PYTHONPATH=. .venv/bin/python benchmarks/checkpoint.py [--dir=/tmp/ckpt_bench]
"""

import json
import os
import shutil
import time

from absl import app
from absl import flags
import jax

from configs import imagenet
from simsiam_jax import checkpointing
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import state as state_lib
from simsiam_jax.models import simsiam

flags.DEFINE_string('dir', '/tmp/simsiam_ckpt_bench', 'Scratch workdir (deleted).')
FLAGS = flags.FLAGS


def _size(path):
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def main(_):
  config = imagenet.get_config()
  mesh = parallel.create_mesh()
  model = simsiam.create_model(config.model)
  tx, _ = optim.create_optimizer(config, 2502, 250200)
  state = state_lib.create(
      state_lib.simsiam_initializer(model, tx, (64, 64, 3)),
      mesh, jax.random.key(0))
  shutil.rmtree(FLAGS.dir, ignore_errors=True)
  jax.block_until_ready(state)
  t = time.perf_counter()
  checkpointing.array_digests(state)  # part of save's blocking time
  digests = time.perf_counter() - t
  ckpt = checkpointing.Checkpointer(FLAGS.dir, config)
  t = time.perf_counter()
  ckpt.save(1, state, force=True)
  blocking = time.perf_counter() - t
  ckpt.wait()
  total = time.perf_counter() - t
  abstract = state_lib.abstract(
      state_lib.simsiam_initializer(model, tx, (64, 64, 3)),
      mesh, jax.random.key(0))
  t = time.perf_counter()
  restored = checkpointing.Checkpointer(FLAGS.dir, config).restore(abstract)
  jax.block_until_ready(restored.params)
  restore = time.perf_counter() - t
  n = sum(x.size for x in jax.tree.leaves(state.params))
  print(json.dumps({
      'params_M': round(n / 1e6, 2),
      'bytes_on_disk_MB': round(_size(ckpt.directory) / 2**20, 1),
      'save_blocking_s': round(blocking, 2), 'save_total_s': round(total, 2),
      'digests_s': round(digests, 2),
      'restore_s': round(restore, 2)}))
  shutil.rmtree(FLAGS.dir, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
