"""One convolution's weight gradient on XLA:CPU, computed two ways.

  PYTHONPATH=. .venv/bin/python benchmarks/weight_grad_forms.py [--batch=256 --size=14 --channels=16]

The demo network's 14x14 layers spend most of their backward pass in weight
gradients (BENCHMARKS.md, "Where the demo step's time goes"): XLA computes
each as a convolution over the batch, which needs the activation copied to a
batch-last layout. This script times, for one 3x3 stride-1 convolution with
a BN/ReLU in front (as in a residual block), jitted, min and median of
`--repeats` calls:

- `xla`: `jax.vjp` of `lax.conv_general_dilated` (what the network uses);
- `shifted_rows`: no layout change at all. The input, padded by one pixel
  and flattened to [N * (H + 2) * (W + 2), C], turns each kernel offset
  (kh, kw) into a constant row shift kh * (W + 2) + kw; with the output
  gradient padded at the bottom and right to the same grid, the weight
  gradient is 9 dots of contiguous row slices contracting over rows;
- the dots alone: nine dots over nine distinct operands against one dot's
  operands nine times (then in cache), which shows what the 9 dots cost is
  reading memory.

It also checks that both forms give the same gradient.
"""

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

flags.DEFINE_integer('batch', 256, 'Images.')
flags.DEFINE_integer('size', 14, 'Height = width of the feature map.')
flags.DEFINE_integer('channels', 16, 'Input = output channels.')
flags.DEFINE_integer('repeats', 20, 'Timed calls per form.')
flags.DEFINE_integer('rounds', 2, 'Interleaved rounds.')
FLAGS = flags.FLAGS

# dot_general dimension numbers: contract the rows of both operands.
_OVER_ROWS = (((0,), (0,)), ((), ()))


def _bn_relu(x):
  c = x.shape[-1]
  return jax.nn.relu(x * jnp.full((c,), 1.1) + jnp.full((c,), 0.1))


def xla_weight_grad(x, dy):
  """d(sum(conv(bn_relu(x), w) * dy)) / dw by XLA's own convolution gradient."""
  h = _bn_relu(x)

  def conv(w):
    return jax.lax.conv_general_dilated(
        h, w, (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  c_in, c_out = x.shape[-1], dy.shape[-1]
  _, vjp = jax.vjp(conv, jnp.zeros((3, 3, c_in, c_out), x.dtype))
  return vjp(dy)[0]


def shifted_rows_weight_grad(x, dy):
  """The same gradient as 9 dots of row-shifted slices (see the docstring)."""
  h = _bn_relu(x)
  width, c_in, c_out = x.shape[2], x.shape[-1], dy.shape[-1]
  rows = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(-1, c_in)
  grads = jnp.pad(dy, ((0, 0), (0, 2), (0, 2), (0, 0))).reshape(-1, c_out)
  n = rows.shape[0] - 2 * (width + 2) - 2  # the largest shift stays in range
  out = [jax.lax.dot_general(rows[s:s + n], grads[:n], _OVER_ROWS)
         for s in (kh * (width + 2) + kw for kh in range(3) for kw in range(3))]
  return jnp.stack(out).reshape(3, 3, c_in, c_out)


def nine_dots(rows, grads):
  """Nine dots, each over its own operand (a scaled copy)."""
  return jnp.stack([
      jax.lax.dot_general(rows * (1 + 0.01 * i), grads, _OVER_ROWS)
      for i in range(9)])


def one_dot_nine_times(rows, grads):
  """The same dot nine times: XLA computes it once, operands stay in cache."""
  return jnp.stack([jax.lax.dot_general(rows, grads, _OVER_ROWS)
                    for _ in range(9)])


def time_ms(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return 1e3 * min(times), 1e3 * float(np.median(times))


def main(argv):
  del argv
  n, s, c = FLAGS.batch, FLAGS.size, FLAGS.channels
  kx, ky = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (n, s, s, c))
  dy = jax.random.normal(ky, (n, s, s, c))
  rows = jax.random.normal(kx, (n * (s + 2) * (s + 2), c))
  grads = jax.random.normal(ky, (n * (s + 2) * (s + 2), c))
  forms = {
      'xla': (jax.jit(xla_weight_grad), (x, dy)),
      'shifted_rows': (jax.jit(shifted_rows_weight_grad), (x, dy)),
      'nine_dots': (jax.jit(nine_dots), (rows, grads)),
      'one_dot_nine_times': (jax.jit(one_dot_nine_times), (rows, grads)),
  }
  ref = forms['xla'][0](x, dy)
  diff = float(jnp.max(jnp.abs(forms['shifted_rows'][0](x, dy) - ref)))
  print(f'[{n}, {s}, {s}, {c}] 3x3 weight gradient; max |shifted_rows - xla| '
        f'= {diff:.3g} (max |xla| = {float(jnp.max(jnp.abs(ref))):.3g})')
  results = {name: [] for name in forms}
  for _ in range(FLAGS.rounds):
    for name, (fn, args) in forms.items():
      results[name].append(time_ms(fn, *args, repeats=FLAGS.repeats))
  print('| form | ms (min / median, best round) |')
  print('|---|---|')
  for name, rounds in results.items():
    best = min(rounds)
    print(f'| {name} | {best[0]:.2f} / {best[1]:.2f} |')


if __name__ == '__main__':
  app.run(main)
