"""The heads' Dense initialisation against `torch.nn.Linear`'s own.

The parity tests copy weights across, so only a test of the initial
distribution itself can tell Flax's default from the official code's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import tiny
from simsiam_jax.models import heads
from simsiam_jax.models import simsiam


def _head_params(head_init: str, head_bn: str = 'default', seed: int = 0):
  config = tiny.get_config()
  config.model.head_init = head_init
  config.model.head_bn = head_bn
  config.model.proj_hidden_dim = 96
  config.model.proj_dim = 64
  config.model.pred_hidden_dim = 48
  model = simsiam.create_model(config.model)
  x = jnp.zeros((2, 16, 16, 3))
  params = model.init(jax.random.key(seed), x, x)['params']
  return {f'{head}/{name}': layer for head in ('projector', 'predictor')
          for name, layer in params[head].items() if name.startswith('dense')}


def _draws(head_init, fan_in, fan_out, n, what='kernel'):
  """n draws of one Dense layer's kernel or bias, flattened."""
  def one(key):
    mlp = heads.MLP((fan_out,), hidden_bn=False, output_bn=False, norm=None,
                    dense_init=head_init)
    return mlp.init(key, jnp.zeros((1, fan_in)))['params']['dense0'][what]
  keys = jax.random.split(jax.random.key(1), n)
  return np.asarray(jax.vmap(one)(keys)).ravel()


def test_every_head_dense_is_torch_linear_by_default():
  dense = _head_params('torch', head_bn='none')  # every Dense has a bias
  assert len(dense) == 4  # projector 2 layers, predictor 2 layers
  for name, layer in dense.items():
    w, b = np.asarray(layer['kernel']), np.asarray(layer['bias'])
    bound = 1 / np.sqrt(w.shape[0])  # kernel [fan_in, fan_out]
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound, name
    assert np.abs(b).max() <= bound and np.abs(b).std() > 0, name
    # Uniform: std bound / sqrt(3) = 1 / sqrt(3 fan_in).
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.1), name


def test_flax_init_is_lecun_normal_with_zero_bias():
  dense = _head_params('flax', head_bn='none')
  for name, layer in dense.items():
    w = np.asarray(layer['kernel'])
    assert w.std() == pytest.approx(1 / np.sqrt(w.shape[0]), rel=0.1), name
    assert not np.any(np.asarray(layer['bias'])), name


def test_unknown_head_init_is_an_error():
  with pytest.raises(ValueError, match='head_init must be one of'):
    _head_params('kaiming')


@pytest.mark.parametrize('what', ['kernel', 'bias'])
@pytest.mark.parametrize('fan_in,fan_out', [(128, 512), (512, 64)])
def test_moments_match_torch_nn_linear(what, fan_in, fan_out):
  torch = pytest.importorskip('torch')
  n = max(2, 200_000 // (fan_out * (fan_in if what == 'kernel' else 1)))
  ours = _draws('torch', fan_in, fan_out, n, what)
  torch.manual_seed(0)
  ref = np.concatenate([
      getattr(torch.nn.Linear(fan_in, fan_out), 'weight' if what == 'kernel'
              else 'bias').detach().numpy().ravel() for _ in range(n)])
  assert len(ours) == len(ref)
  scale = ref.std()
  for k in (1, 2, 4):  # mean 0, variance, and the uniform's 4th moment
    assert np.mean(ours ** k) / scale ** k == pytest.approx(
        np.mean(ref ** k) / scale ** k, abs=0.03), k
  assert ours.min() >= ref.min() - 0.01 * scale
  assert ours.max() <= ref.max() + 0.01 * scale
  assert stats.ks_2samp(ours, ref).pvalue > 1e-3
  # Flax's default is another distribution, and the same test sees it.
  if what == 'kernel':
    flax_default = _draws('flax', fan_in, fan_out, n, what)
    assert stats.ks_2samp(flax_default, ref).pvalue < 1e-6
