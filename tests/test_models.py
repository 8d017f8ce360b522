"""ResNet sizes, head layouts and SimSiam's per-view BatchNorm semantics."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from simsiam_jax.models import resnet
from simsiam_jax.models import simsiam


def _num_params(module, *inputs, **kwargs):
  shapes = jax.eval_shape(
      lambda: module.init(jax.random.key(0), *inputs, **kwargs))
  return sum(x.size for x in jax.tree.leaves(shapes['params'])), shapes


@pytest.mark.parametrize('depth,count', [(50, 23_508_032), (18, 11_176_512)])
def test_backbone_parameter_count_matches_torchvision(depth, count):
  x = jnp.zeros((1, 64, 64, 3))
  n, _ = _num_params(resnet.ResNet(depth=depth), x, train=False)
  assert n == count


@pytest.mark.parametrize('depth,dim', [(18, 512), (34, 512), (50, 2048),
                                       (101, 2048), (152, 2048)])
def test_feature_dim(depth, dim):
  out = jax.eval_shape(
      lambda: resnet.ResNet(depth=depth).init_with_output(
          jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)[0])
  assert out.shape == (1, dim)


def _init(model, *inputs):
  return jax.jit(model.init)(jax.random.key(0), *inputs)


def _tiny_model(**overrides):
  config = tiny.get_config()
  for k, v in overrides.items():
    config.model[k] = v
  return simsiam.create_model(config.model), config


def _flat_keys(tree):
  return {'/'.join(k) for k in flax.traverse_util.flatten_dict(tree)}


def test_official_head_layout():
  model, _ = _tiny_model(proj_layers=3)
  x = jnp.zeros((2, 16, 16, 3))
  _, shapes = _num_params(model, x, x)
  params = _flat_keys(shapes['params'])
  stats = _flat_keys(shapes['batch_stats'])
  # Projector: Dense(no bias) BN ReLU Dense(no bias) BN ReLU Dense(no bias) BN(affine=False)
  assert {'projector/dense0/kernel', 'projector/bn0/scale',
          'projector/dense2/kernel'} <= params
  assert not any(k.startswith('projector/dense') and k.endswith('bias')
                 for k in params)
  assert 'projector/bn2/mean' in stats
  assert not any(k.startswith('projector/bn2') for k in params)
  # Predictor: Dense(no bias) BN ReLU Dense(bias), no output BN.
  assert {'predictor/dense0/kernel', 'predictor/bn0/scale',
          'predictor/dense1/kernel', 'predictor/dense1/bias'} <= params
  assert 'predictor/dense0/bias' not in params
  assert not any(k.startswith('predictor/bn1') for k in stats)


def test_head_bn_none_has_biases_and_no_bn():
  model, _ = _tiny_model(head_bn='none')
  x = jnp.zeros((2, 16, 16, 3))
  _, shapes = _num_params(model, x, x)
  params = _flat_keys(shapes['params'])
  assert 'projector/dense0/bias' in params and 'predictor/dense0/bias' in params
  assert not any('/bn' in k for k in params
                 if k.startswith(('projector', 'predictor')))


def test_predictor_none_returns_z():
  model, _ = _tiny_model(predictor='none')
  x1 = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  x2 = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
  variables = _init(model, x1, x2)
  assert 'predictor' not in variables['params']
  (z1, z2, p1, p2), _ = jax.jit(functools.partial(
      model.apply, mutable=['batch_stats']))(variables, x1, x2)
  np.testing.assert_array_equal(z1, p1)
  np.testing.assert_array_equal(z2, p2)


def test_each_view_has_its_own_batch_statistics():
  """z1 depends on view 1 only; a concatenated 2B batch would mix views."""
  model, _ = _tiny_model()
  key = jax.random.key(3)
  x1, x2, x2b = (jax.random.normal(k, (8, 16, 16, 3))
                 for k in jax.random.split(key, 3))
  variables = _init(model, x1, x2)
  apply = jax.jit(lambda a, b: model.apply(variables, a, b,
                                           mutable=['batch_stats'])[0])
  z1, _, p1, _ = apply(x1, x2)
  z1b, _, p1b, _ = apply(x1, 3.0 * x2b + 1.0)
  np.testing.assert_allclose(z1, z1b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(p1, p1b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('zero', [True, False])
def test_zero_init_residual(zero):
  model = resnet.ResNet(depth=18, width=8, stage_sizes=(1, 1, 1, 1),
                        zero_init_residual=zero)
  variables = _init(model,
                                     jnp.zeros((2, 16, 16, 3)))
  scale = variables['params']['layer1_0']['bn2']['scale']
  np.testing.assert_array_equal(scale, 0.0 if zero else 1.0)


def test_bfloat16_compute_float32_params():
  model, _ = _tiny_model(dtype='bfloat16')
  x = jnp.ones((2, 16, 16, 3))
  variables = _init(model, x, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  (z1, _, p1, _), _ = jax.jit(functools.partial(
      model.apply, mutable=['batch_stats']))(variables, x, x)
  assert z1.dtype == jnp.bfloat16 and p1.dtype == jnp.bfloat16


@pytest.mark.parametrize('stem,size', [('imagenet', 16), ('cifar', 64)])
def test_stem_resolution(stem, size):
  """imagenet: 7x7/2 conv + 3x3/2 pool (64 -> 16); cifar: 3x3/1, no pool."""
  model = resnet.ResNet(depth=18, width=8, stem=stem)
  _, state = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False,
      capture_intermediates=True))
  layer1 = state['intermediates']['layer1_0']['__call__'][0]
  assert layer1.shape == (1, size, size, 8)


def test_stage_widths():
  """Explicit stage widths: each stage's blocks get their width; the default
  (width doubled per stage) is the same network as writing it out."""
  x = jnp.zeros((1, 16, 16, 3))
  kw = dict(depth=18, width=4, stage_sizes=(1, 1, 1, 1), stem='cifar')
  _, default = _num_params(resnet.ResNet(**kw), x, train=False)
  _, spelt = _num_params(resnet.ResNet(stage_widths=(4, 8, 16, 32), **kw), x,
                         train=False)
  assert jax.tree.map(lambda a: a.shape, default) == jax.tree.map(
      lambda a: a.shape, spelt)
  wide = resnet.ResNet(stage_widths=(4, 8, 16, 64), **kw)
  out, shapes = jax.eval_shape(lambda: wide.init_with_output(
      jax.random.key(0), x, train=False))
  assert out.shape == (1, 64)
  params = shapes['params']
  assert params['layer4_0']['conv1']['kernel'].shape == (3, 3, 16, 64)
  assert params['layer4_0']['downsample_conv']['kernel'].shape == (1, 1, 16, 64)
  assert params['layer3_0']['conv2']['kernel'].shape == (3, 3, 16, 16)
  with pytest.raises(ValueError, match='one width per stage'):
    jax.eval_shape(lambda: resnet.ResNet(stage_widths=(4, 8), **kw).init(
        jax.random.key(0), x, train=False))
