"""The loss against NumPy, stop-gradient exactness, and the collapse statistic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simsiam_jax import losses


def _np_normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_neg_cos(p, z):
  return -np.mean(np.sum(_np_normalize(p) * _np_normalize(z), axis=-1))


def _np_cross_entropy(p, z):
  log_p = p - np.log(np.sum(np.exp(p), axis=-1, keepdims=True))
  q = np.exp(z) / np.sum(np.exp(z), axis=-1, keepdims=True)
  return -np.mean(np.sum(q * log_p, axis=-1))


@pytest.fixture
def vectors():
  rng = np.random.default_rng(0)
  return [rng.standard_normal((32, 64)).astype(np.float32) for _ in range(4)]


@pytest.mark.parametrize('similarity,ref', [('cosine', _np_neg_cos),
                                            ('cross_entropy', _np_cross_entropy)])
def test_symmetric_loss_matches_numpy(vectors, similarity, ref):
  p1, p2, z1, z2 = vectors
  got = losses.simsiam_loss(p1, p2, z1, z2, similarity=similarity)
  want = 0.5 * ref(p1, z2) + 0.5 * ref(p2, z1)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_asymmetric_loss_is_one_direction(vectors):
  p1, p2, z1, z2 = vectors
  got = losses.simsiam_loss(p1, p2, z1, z2, symmetric=False)
  np.testing.assert_allclose(got, _np_neg_cos(p1, z2), rtol=1e-5)


def test_cosine_loss_range_and_extremes(vectors):
  p1, p2, z1, z2 = vectors
  value = losses.simsiam_loss(p1, p2, z1, z2)
  assert -1.0 <= float(value) <= 1.0
  # D pairs p1 with z2 and p2 with z1.
  np.testing.assert_allclose(losses.simsiam_loss(z1, z2, 3 * z2, 2 * z1), -1.0,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.simsiam_loss(z1, z2, -z2, -z1), 1.0,
                             rtol=1e-6)


@pytest.mark.parametrize('stop_gradient', [True, False])
def test_gradient_through_targets(vectors, stop_gradient):
  p1, p2, z1, z2 = vectors
  grad_z = jax.grad(
      lambda z1, z2: losses.simsiam_loss(p1, p2, z1, z2,
                                         stop_gradient=stop_gradient),
      argnums=(0, 1))(z1, z2)
  grad_p = jax.grad(lambda p1: losses.simsiam_loss(
      p1, p2, z1, z2, stop_gradient=stop_gradient))(p1)
  assert np.all(np.isfinite(grad_p)) and np.abs(grad_p).max() > 0
  for g in grad_z:
    if stop_gradient:
      assert np.all(np.asarray(g) == 0.0), 'target branch got a gradient'
    else:
      assert np.abs(g).max() > 1e-4


def test_normalize_is_safe_at_zero():
  zero = jnp.zeros((4, 8))
  value, grad = jax.value_and_grad(
      lambda p: losses.negative_cosine(p, jnp.ones((4, 8))))(zero)
  assert np.isfinite(value) and float(value) == 0.0
  assert np.all(np.isfinite(grad))


def test_collapse_std_healthy_and_collapsed():
  rng = np.random.default_rng(1)
  gaussian = rng.standard_normal((4096, 256)).astype(np.float32)
  np.testing.assert_allclose(losses.collapse_std(gaussian), 1.0, atol=0.02)
  constant = np.tile(rng.standard_normal((1, 256)), (512, 1)).astype(np.float32)
  assert float(losses.collapse_std(constant)) < 1e-3


def test_unknown_similarity_is_an_error(vectors):
  with pytest.raises(ValueError, match='similarity'):
    losses.simsiam_loss(*vectors, similarity='l2')
