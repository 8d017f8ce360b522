"""Collectives of one SimSiam train step, from the compiled program, for N devices.

Compiles the real sharded train step ahead of time for a mesh of N devices
(simulated CPU devices: no hardware and no memory for the state is needed;
the state and batch are abstract) and counts the cross-device collectives in
the optimised HLO with their bytes per device: the gradient all-reduce and
the BatchNorm statistics reductions. Each N runs in its own process.

  PYTHONPATH=. .venv/bin/python benchmarks/collectives.py --devices=8,64,256 \\
      --config=configs/imagenet.py --per_device_batch=2 --image_size=64
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys

_OPS = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute',
        'all-to-all')
_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1,
          'f64': 8, 's64': 8}


def _shape_bytes(text: str) -> int:
  total = 0
  for dtype, dims in re.findall(r'(\w+)\[([\d,]*)\]', text):
    if dtype in _BYTES:
      n = 1
      for d in filter(None, dims.split(',')):
        n *= int(d)
      total += n * _BYTES[dtype]
  return total


def count_collectives(hlo: str) -> dict:
  """{op: {'count': n, 'bytes': operand bytes per device}} of an HLO module."""
  out = collections.defaultdict(lambda: {'count': 0, 'bytes': 0})
  for line in hlo.splitlines():
    m = re.match(r'\s*(?:ROOT )?\S+ = (.+?) (' + '|'.join(_OPS) +
                 r')(?:-start)?\(', line)
    if m and '-done' not in line:
      out[m.group(2)]['count'] += 1
      out[m.group(2)]['bytes'] += _shape_bytes(m.group(1))
  return dict(out)


def _one(args):
  import jax  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,unused-import
  from simsiam_jax import optim, parallel, state as state_lib, train  # pylint: disable=g-import-not-at-top
  from simsiam_jax.models import simsiam  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  module, _, variant = args.config.partition(':')
  cfg_mod = importlib.import_module(module.replace('/', '.').removesuffix('.py'))
  config = cfg_mod.get_config(variant) if variant else cfg_mod.get_config()
  n = jax.device_count()
  config.batch_size = n * args.per_device_batch
  config.model.dtype = args.dtype
  mesh = parallel.create_mesh()
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, 100, 10_000)
  shape = (args.image_size, args.image_size, 3)
  state = state_lib.abstract(
      state_lib.simsiam_initializer(model, tx, shape), mesh, jax.random.key(0))
  batch = {v: jax.ShapeDtypeStruct((config.batch_size, *shape), jax.numpy.float32,
                                   sharding=parallel.data_sharded(mesh))
           for v in ('view1', 'view2')}
  step = train.make_train_step(config, mesh, schedule)
  hlo = step.lower(state, batch).compile().as_text()
  params = sum(x.size for x in jax.tree.leaves(state.params))
  print(json.dumps({'devices': n, 'config': args.config, 'dtype': args.dtype,
                    'params': params, 'param_bytes': 4 * params,
                    'collectives': count_collectives(hlo)}))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--devices', default='8,64,256')
  p.add_argument('--config', default='configs/imagenet.py')
  p.add_argument('--per_device_batch', type=int, default=2)
  p.add_argument('--image_size', type=int, default=64)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--one', action='store_true', help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.one:
    _one(args)
    return
  for n in args.devices.split(','):
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}',
               JAX_PLATFORMS='cpu')
    cmd = [sys.executable, __file__, '--one', f'--config={args.config}',
           f'--per_device_batch={args.per_device_batch}',
           f'--image_size={args.image_size}', f'--dtype={args.dtype}']
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
    print(lines[-1] if lines else json.dumps({'devices': n, 'error': out.stderr[-2000:]}),
          flush=True)


if __name__ == '__main__':
  main()
