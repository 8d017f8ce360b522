"""Which convolutions of a compiled train step XLA:CPU runs outside a library.

XLA:CPU hands a convolution to YNNPACK (a `__ynn_fusion` custom fusion) or
to Eigen (a top-level convolution thunk). What neither takes is emitted as
a naive loop nest: a convolution inside an ordinary (kLoop/kOutput) fusion,
or a top-level one with a reversed window, which Eigen's kernels do not
support. The window-reversed ones come from XLA's algebraic simplifier: a
3x3 convolution on a 2x2 map (ResNet's last stage on small images) is
trimmed to a 2x2 window, and its input gradient becomes a window-reversed
convolution. Those six ran at 70-80 ms each in the demo step, 41-43 % of it.
(Checked against `--xla_dump_to`: exactly the convolutions classified
'naive' here get an `*_elemental_kernel_module`.)

`models.resnet.Conv(impl='auto')` computes those shapes as im2col + one
matrix product; `tests/test_conv.py` asserts from this classification that
no convolution of the demo or the ResNet-18 step is left naive.

  PYTHONPATH=. .venv/bin/python benchmarks/xla_cpu_convs.py

prints the counts per step and conv_impl, and times the minimal reproducer
(one 3x3 convolution on 2x2 maps, forward and backward) both ways.
"""

import collections
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

_COMPUTATION = re.compile(r'^(ENTRY )?%?([\w.\-]+) ')
_FUSION = re.compile(r'fusion\(.*kind=(\w+), calls=%([\w.\-]+)')


def classify_convolutions(hlo_text: str) -> list[tuple[str, str, str]]:
  """(where, shape, window) of every convolution in compiled HLO text.

  where: 'ynnpack', 'eigen' or 'naive' (see the module docstring).
  """
  bodies, current = {}, None
  for line in hlo_text.split('\n'):
    m = _COMPUTATION.match(line)
    if m and not line.startswith(' ') and line.rstrip().endswith('{'):
      current = 'ENTRY' if m.group(1) else m.group(2)
      bodies[current] = []
    elif current is not None:
      bodies[current].append(line)
  caller = {}
  for lines in bodies.values():
    for line in lines:
      m = _FUSION.search(line)
      if m:
        caller[m.group(2)] = 'ynn' if '__ynn_fusion' in line else m.group(1)
  found = []
  for name, lines in bodies.items():
    for line in lines:
      if ' convolution(' not in line:
        continue
      window = re.search(r'window=\{([^}]*)\}', line).group(1)
      shape = re.search(r'= (\S+) convolution', line).group(1)
      kind = caller.get(name, 'top')
      if kind == 'ynn':
        where = 'ynnpack'
      elif kind == 'top':
        where = 'naive' if 'rhs_reversal' in window else 'eigen'
      else:  # a convolution fused into a loop: the elemental emitter
        where = 'naive'
      found.append((where, shape, window))
  return found


def compiled_train_step(config, batch_size: int):
  """The compiled HLO text of `config`'s train step on one device."""
  from simsiam_jax import optim, parallel, state as state_lib, train  # pylint: disable=g-import-not-at-top
  from simsiam_jax.models import simsiam  # pylint: disable=g-import-not-at-top
  mesh = parallel.create_mesh(jax.devices()[:1])
  size = config.data.image_size
  shape = (size, size, config.data.channels)
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, 100, 10_000)
  state = state_lib.abstract(
      state_lib.simsiam_initializer(model, tx, shape), mesh, jax.random.key(0))
  views = {v: jax.ShapeDtypeStruct((batch_size, *shape), jnp.float32,
                                   sharding=parallel.data_sharded(mesh))
           for v in ('view1', 'view2')}
  step = train.make_train_step(config, mesh, schedule)
  return step.lower(state, views).compile().as_text()


def reproducer(impl: str, batch: int = 256, channels: int = 128):
  """Seconds per forward + backward of one 3x3 conv on 2x2 maps."""
  from simsiam_jax.models import resnet  # pylint: disable=g-import-not-at-top
  conv = resnet.Conv(channels, (3, 3), impl=impl)
  x = jnp.asarray(np.random.default_rng(0).standard_normal(
      (batch, 2, 2, channels)), jnp.float32)
  params = conv.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(conv.apply(p, x) ** 2),
                          argnums=(0, 1)))
  jax.block_until_ready(grad(params, x))
  times = []
  for _ in range(20):
    t = time.perf_counter()
    jax.block_until_ready(grad(params, x))
    times.append(time.perf_counter() - t)
  text = grad.lower(params, x).compile().as_text()
  naive = sum(w == 'naive' for w, _, _ in classify_convolutions(text))
  return min(times), float(np.median(times)), naive


def main():
  sys.path.insert(0, '.')
  from configs import cifar10, fashion_mnist  # pylint: disable=g-import-not-at-top
  steps = {'demo (fashion_mnist.py, 28 px)': (fashion_mnist.get_config(), 256),
           'ResNet-18 cifar (32 px)': (cifar10.get_config(), 128)}
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  steps['ResNet-50 (224 px)'] = (imagenet.get_config(), 8)
  print(f'jax {jax.__version__}, {jax.devices()[0].device_kind}')
  for name, (config, batch) in steps.items():
    for impl in ('xla', 'auto'):
      config.model.conv_impl = impl
      counts = collections.Counter(
          w for w, _, _ in classify_convolutions(
              compiled_train_step(config, batch)))
      print(f'{name:32s} conv_impl={impl:5s} naive {counts["naive"]:3d} | '
            f'eigen {counts["eigen"]:3d} | ynnpack {counts["ynnpack"]:3d}',
            flush=True)
  print('Reproducer: one 3x3 conv, 2x2 maps, batch 256, 128 channels, '
        'forward + backward')
  for impl in ('xla', 'auto'):
    best, median, naive = reproducer(impl)
    print(f'  conv_impl={impl:5s} min {best * 1e3:6.1f} ms  median '
          f'{median * 1e3:6.1f} ms  naive convolutions {naive}')


if __name__ == '__main__':
  main()
