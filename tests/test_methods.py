"""The comparison methods' losses and state against NumPy, on 1 and 8 devices."""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from simsiam_jax import parallel
from simsiam_jax.methods import barlow_twins
from simsiam_jax.methods import byol
from simsiam_jax.methods import moco
from simsiam_jax.methods import simclr
from simsiam_jax.methods import swav
from simsiam_jax.methods import target
from simsiam_jax.methods import vicreg

B, D = 16, 8


def _pair(seed=0, b=B, d=D):
  rng = np.random.default_rng(seed)
  z1 = rng.standard_normal((b, d))
  return z1, z1 + 0.5 * rng.standard_normal((b, d))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_nt_xent(z1, z2, t):
  z = _unit(np.concatenate([z1, z2]))
  n = len(z1)
  total = 0.0
  for i in range(2 * n):
    others = [j for j in range(2 * n) if j != i]
    logits = np.array([z[i] @ z[j] / t for j in others])
    pos = others.index((i + n) % (2 * n))
    total -= _log_softmax(logits)[pos]
  return total / (2 * n)


def np_info_nce(q, k, queue, t):
  q, k = _unit(q), _unit(k)
  logits = np.concatenate([(q * k).sum(-1, keepdims=True), q @ queue.T], -1) / t
  return -_log_softmax(logits)[:, 0].mean()


def np_sinkhorn(scores, eps, iters):  # main_swav.py's distributed_sinkhorn
  q = np.exp(scores / eps).T
  k, b = q.shape
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def np_swav(s1, s2, t, eps, iters):
  q1, q2 = np_sinkhorn(s1, eps, iters), np_sinkhorn(s2, eps, iters)
  ce = lambda q, s: -(q * _log_softmax(s / t)).sum(-1).mean()
  return 0.5 * (ce(q1, s2) + ce(q2, s1))


def np_barlow(z1, z2, lam):
  std = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
  c = std(z1).T @ std(z2) / len(z1)
  off = c - np.diag(np.diag(c))
  return ((1 - np.diag(c)) ** 2).sum() + lam * (off ** 2).sum()


def np_vicreg(z1, z2, a, b, c):
  inv = ((z1 - z2) ** 2).mean()
  var = sum(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)).mean()
            for z in (z1, z2)) / 2
  def cov(z):
    zc = z - z.mean(0)
    m = zc.T @ zc / (len(z) - 1)
    return ((m - np.diag(np.diag(m))) ** 2).sum() / z.shape[1]
  return a * inv + b * var + c * (cov(z1) + cov(z2))


QUEUE = _unit(np.random.default_rng(9).standard_normal((32, D)))
PROTOS = np.random.default_rng(8).standard_normal((12, D))

# name: (our loss of (z1, z2), NumPy's)
LOSSES = {
    'simclr': (lambda a, b: simclr.nt_xent(a, b, 0.5),
               lambda a, b: np_nt_xent(a, b, 0.5)),
    'moco': (lambda a, b: moco.info_nce(a, b, jnp.asarray(QUEUE), 0.2),
             lambda a, b: np_info_nce(a, b, QUEUE, 0.2)),
    'byol': (lambda a, b: byol.byol_loss(a, b, a, b),
             lambda a, b: 2 * np.mean(2 - 2 * (_unit(a) * _unit(b)).sum(-1))),
    'swav': (lambda a, b: swav.swav_loss(
        swav.prototype_scores(a, PROTOS), swav.prototype_scores(b, PROTOS),
        0.1, 0.05, 3),
             lambda a, b: np_swav(_unit(a) @ _unit(PROTOS).T,
                                  _unit(b) @ _unit(PROTOS).T, 0.1, 0.05, 3)),
    'barlow_twins': (lambda a, b: barlow_twins.barlow_twins_loss(a, b, 0.0051),
                     lambda a, b: np_barlow(a, b, 0.0051)),
    'vicreg': (lambda a, b: vicreg.vicreg_loss(a, b, 25.0, 25.0, 1.0),
               lambda a, b: np_vicreg(a, b, 25.0, 25.0, 1.0)),
}


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_loss_equals_numpy(name):
  ours, reference = LOSSES[name]
  z1, z2 = _pair()
  got = float(jax.jit(ours)(jnp.asarray(z1, jnp.float32),
                            jnp.asarray(z2, jnp.float32)))
  np.testing.assert_allclose(got, reference(z1, z2), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_loss_over_8_devices_equals_1(name):
  """Negatives, Sinkhorn sums and (cross-)covariances are over the global batch."""
  ours, _ = LOSSES[name]
  z1, z2 = (jnp.asarray(z, jnp.float32) for z in _pair(1, b=32))
  one = jax.jit(ours)(z1, z2)
  mesh = parallel.create_mesh()
  sharded = NamedSharding(mesh, P(parallel.DATA_AXIS))
  assert mesh.devices.size == 8
  eight = jax.jit(ours)(jax.device_put(z1, sharded), jax.device_put(z2, sharded))
  np.testing.assert_allclose(float(eight), float(one), rtol=1e-5, atol=1e-6)


def test_sinkhorn_equals_the_official_iteration_and_its_marginals():
  scores = np.tanh(np.random.default_rng(2).standard_normal((B, 12)))
  q = np.asarray(swav.sinkhorn(jnp.asarray(scores, jnp.float32), 0.05, 3))
  np.testing.assert_allclose(q, np_sinkhorn(scores, 0.05, 3), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)  # a code per image
  # Iterated on, the prototypes come to be used equally: B / K each.
  q = np.asarray(swav.sinkhorn(jnp.asarray(scores, jnp.float32), 0.05, 300))
  np.testing.assert_allclose(q.sum(axis=0), B / 12, rtol=1e-3)
  np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)


def test_no_gradient_reaches_any_target_branch():
  z1, z2 = (jnp.asarray(z, jnp.float32) for z in _pair(3))
  g = jax.grad(lambda t: byol.byol_loss(z1, z2, t, t + 1.0))(z2)
  assert np.all(np.asarray(g) == 0.0)
  g = jax.grad(lambda k: moco.info_nce(z1, k, jnp.asarray(QUEUE), 0.2))(z2)
  assert np.all(np.asarray(g) == 0.0)
  g = jax.grad(lambda qu: moco.info_nce(z1, z2, qu, 0.2))(jnp.asarray(QUEUE))
  assert np.all(np.asarray(g) == 0.0)
  scores = jnp.asarray(np.tanh(z1 @ PROTOS.T), jnp.float32)
  assert np.all(np.asarray(jax.grad(
      lambda s: jnp.sum(swav.sinkhorn(s, 0.05, 3)))(scores)) == 0.0)
  # SwAV's gradient is the prediction's alone, the codes held constant.
  other = scores[::-1]
  q = swav.sinkhorn(other, 0.05, 3)
  fixed = lambda s: -jnp.mean(jnp.sum(
      q * jax.nn.log_softmax(s / 0.1, axis=-1), axis=-1))
  np.testing.assert_allclose(
      np.asarray(jax.grad(lambda s: swav.swav_loss(other, s, 0.1, 0.05, 3))(
          scores)),
      np.asarray(jax.grad(lambda s: 0.5 * fixed(s))(scores)), atol=1e-7)


def test_queue_is_first_in_first_out():
  queue = moco.init_queue(jax.random.key(0), 8, 3)
  np.testing.assert_allclose(np.linalg.norm(queue['keys'], axis=1), 1.0,
                             rtol=1e-6)
  push = jax.jit(moco.enqueue)
  # Each batch tagged by its own direction: 4 slots, 3 batches of 2. The
  # third overwrote the first (the oldest); the second is still there.
  queue = moco.init_queue(jax.random.key(0), 4, 4)
  for i in range(3):
    queue = push(queue, jnp.asarray(np.eye(4, dtype=np.float32)[[i, i]]))
  np.testing.assert_array_equal(np.asarray(queue['keys']),
                                np.eye(4, dtype=np.float32)[[2, 2, 1, 1]])
  assert int(queue['ptr']) == 2
  with pytest.raises(ValueError, match='multiple of the global batch'):
    moco.enqueue(moco.init_queue(jax.random.key(0), 6, 3), jnp.ones((4, 3)))


def test_ema_update_is_exact_and_the_momentum_rises_to_one():
  online = {'w': jnp.asarray([1.0, 2.0]), 'b': jnp.asarray(3.0)}
  tgt = {'w': jnp.asarray([5.0, -2.0]), 'b': jnp.asarray(0.0)}
  new = target.ema_update(tgt, online, 0.75)
  np.testing.assert_array_equal(np.asarray(new['w']), [4.0, -1.0])
  np.testing.assert_array_equal(np.asarray(new['b']), 0.75)
  tau = functools.partial(target.momentum, tau_base=0.996, num_steps=100,
                          cosine=True)
  np.testing.assert_allclose(float(tau(0)), 0.996, rtol=1e-7)
  np.testing.assert_allclose(float(tau(50)), 0.998, rtol=1e-7)
  np.testing.assert_allclose(float(tau(100)), 1.0, rtol=1e-7)
  assert target.momentum(70, 0.999, 100, cosine=False) == 0.999


def _method_config(name):
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.method = name
  if name != 'simsiam':
    config.model.predictor = 'none'
  return config


def _first_step(config, devices):
  """(loss the step reports, loss of the method on the same outputs, params)."""
  from simsiam_jax import methods  # pylint: disable=g-import-not-at-top
  from simsiam_jax import optim  # pylint: disable=g-import-not-at-top
  from simsiam_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  from simsiam_jax import train  # pylint: disable=g-import-not-at-top
  from simsiam_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from simsiam_jax.models import simsiam  # pylint: disable=g-import-not-at-top
  batch = next(synthetic.train_batches(32, 16, 3, 16, seed=0))
  batch = {k: batch[k] for k in ('view1', 'view2')}
  mesh = parallel.create_mesh(devices)
  model = simsiam.create_model(config.model)
  tx, schedule = optim.create_optimizer(config, 16, 64)
  state = state_lib.create(state_lib.simsiam_initializer(model, tx, (16, 16, 3)),
                           mesh, jax.random.key(0))
  z1, z2, p1, p2 = model.apply(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batch['view1'], batch['view2'], train=True, mutable=['batch_stats'])[0]
  want = methods.get(config.method).loss(
      {'z1': z1, 'z2': z2, 'p1': p1, 'p2': p2}, config)
  step = train.make_train_step(config, mesh, schedule)
  state, metrics = step(state, parallel.host_to_global(batch, mesh))
  return float(metrics['loss']), float(want), jax.device_get(state.params)


@pytest.mark.parametrize('name', ['simclr', 'barlow_twins', 'vicreg'])
def test_the_train_step_takes_the_method_loss_on_1_and_8_devices(name):
  config = _method_config(name)
  got1, want1, params1 = _first_step(config, jax.devices()[:1])
  got8, _, params8 = _first_step(config, jax.devices())
  np.testing.assert_allclose(got1, want1, rtol=1e-5)
  np.testing.assert_allclose(got8, got1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params8)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert 'predictor' not in params1


def test_a_method_without_predictor_asks_for_model_predictor_none():
  from simsiam_jax import config_check  # pylint: disable=g-import-not-at-top
  from simsiam_jax import errors  # pylint: disable=g-import-not-at-top
  config = _method_config('simclr')
  config_check.check(config)
  config.model.predictor = 'mlp'
  with pytest.raises(errors.ConfigError, match='model.predictor=none'):
    config_check.check(config)
  config.method = 'byol_typo'
  with pytest.raises(errors.ConfigError, match='method must be one of'):
    config_check.check(config)
