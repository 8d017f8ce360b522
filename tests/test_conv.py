"""The ResNet's convolution: im2col + dot equals XLA's convolution; nothing naive on CPU."""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import xla_cpu_convs
from configs import cifar10, fashion_mnist
from simsiam_jax.models import resnet
from simsiam_jax.models import simsiam


def _conv_shapes(config, image_size):
  """(input [H, W, C], features, kernel, stride) of every Conv the backbone runs."""
  model = simsiam.create_model(config.model).backbone
  shapes = set()

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, resnet.Conv):
      m, x = context.module, args[0]
      shapes.add((x.shape[1:], m.features, tuple(m.kernel_size), m.strides))
    return next_fun(*args, **kwargs)

  x = jnp.zeros((1, image_size, image_size, 3))
  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.key(0), x)
  return sorted(shapes)


def _all_shapes():
  demo, r18 = fashion_mnist.get_config(), cifar10.get_config()
  r50 = cifar10.get_config()
  r50.model.depth, r50.model.stem = 50, 'imagenet'  # 64 px: maps down to 2x2
  return sorted(set(_conv_shapes(demo, 28) +
                    _conv_shapes(r18, 32) + _conv_shapes(r50, 64)))


SHAPES = _all_shapes()
# Every shape 'auto' computes as im2col in these networks, plus a 3x3 and a
# strided 7x7 that it leaves to XLA (the 'im2col' setting computes all).
IM2COL_SHAPES = [s for s in SHAPES
                 if resnet.uses_im2col('auto', s[0][:2], s[2], (s[3], s[3]))]
# 1x1 convolutions all take the same path (a strided slice and a dot): those
# of up to 256 input channels stand for the wider ResNet-50 ones.
CHECKED_SHAPES = [s for s in IM2COL_SHAPES
                  if s[2] != (1, 1) or s[0][2] <= 256] + [
                      ((14, 14, 16), 16, (3, 3), 1), ((16, 16, 3), 8, (7, 7), 2)]


def test_auto_picks_im2col_exactly_where_the_output_is_smaller_than_the_window():
  assert resnet.uses_im2col('auto', (2, 2), (3, 3), (1, 1))      # 4 < 9
  assert resnet.uses_im2col('auto', (4, 4), (3, 3), (2, 2))      # 4 < 9
  assert not resnet.uses_im2col('auto', (4, 4), (3, 3), (1, 1))  # 16 >= 9
  assert not resnet.uses_im2col('auto', (56, 56), (7, 7), (2, 2))
  assert resnet.uses_im2col('auto', (56, 56), (1, 1), (1, 1))    # 1x1: a dot
  assert not resnet.uses_im2col('xla', (2, 2), (3, 3), (1, 1))
  assert resnet.uses_im2col('im2col', (56, 56), (3, 3), (1, 1))
  with pytest.raises(ValueError, match='conv impl'):
    resnet.uses_im2col('cudnn', (2, 2), (3, 3), (1, 1))


def test_shapes_cover_the_tiny_maps():
  # The list below must include the cases the im2col path exists for.
  assert any(hw[:2] == (2, 2) and k == (3, 3) for hw, _, k, _ in SHAPES)
  assert any(s == 2 and k == (1, 1) for _, _, k, s in SHAPES)
  assert len(SHAPES) > 20 and len(IM2COL_SHAPES) > 5


@pytest.mark.parametrize('in_shape,features,kernel,stride', CHECKED_SHAPES,
                         ids=lambda v: str(v).replace(' ', ''))
def test_im2col_equals_xla_convolution_and_gradients(in_shape, features,
                                                     kernel, stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, *in_shape)), jnp.float32)
  cot = None
  results = {}
  for impl in ('xla', 'im2col'):
    conv = resnet.Conv(features, kernel, stride, impl=impl)
    params = conv.init(jax.random.key(1), x)  # same key: same kernel
    y, vjp = jax.vjp(conv.apply, params, x)
    if cot is None:
      cot = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    results[impl] = (y, *vjp(cot))
  (y0, gp0, gx0), (y1, gp1, gx1) = results['xla'], results['im2col']
  assert jax.tree.structure(gp0) == jax.tree.structure(gp1)
  np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gp1['params']['kernel'], gp0['params']['kernel'],
                             rtol=1e-4, atol=2e-3)


def test_same_parameters_as_flax_conv():
  x = jnp.ones((1, 8, 8, 3))
  ours = resnet.Conv(16, (3, 3), 2).init(jax.random.key(0), x)
  flax_conv = nn.Conv(16, (3, 3), 2, padding=1, use_bias=False,
                      kernel_init=resnet.conv_init).init(jax.random.key(0), x)
  np.testing.assert_array_equal(ours['params']['kernel'],
                                flax_conv['params']['kernel'])
  np.testing.assert_allclose(
      resnet.Conv(16, (3, 3), 2).apply(ours, x),
      nn.Conv(16, (3, 3), 2, padding=1, use_bias=False).apply(flax_conv, x),
      rtol=1e-5, atol=1e-5)


def _naive(config, batch):
  found = xla_cpu_convs.classify_convolutions(
      xla_cpu_convs.compiled_train_step(config, batch))
  return collections.Counter(w for w, _, _ in found), found


def test_classifier_finds_the_naive_pattern():
  """XLA's plain convolution of 2x2 maps is still a naive loop on CPU.

  If this fails, a JAX release fixed it: Conv's 'auto' rule can go.
  """
  _, _, naive = xla_cpu_convs.reproducer('xla', batch=4, channels=8)
  assert naive > 0
  assert xla_cpu_convs.reproducer('auto', batch=4, channels=8)[2] == 0


@pytest.mark.parametrize('name', ['demo', 'resnet18'])
def test_no_convolution_left_to_the_naive_emitter(name):
  config = (fashion_mnist.get_config() if name == 'demo'
            else cifar10.get_config())
  counts, found = _naive(config, 8)
  assert counts['naive'] == 0, [f for f in found if f[0] == 'naive']
  assert counts['ynnpack'] + counts['eigen'] > 0
