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
  return np_nt_xent_hybrid(z1, z2, z1, z2, t)  # anchors = candidates


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


def _method_config(name, overrides=()):
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from simsiam_jax.methods import registry  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.method = name
  config.moco.queue_size = 64  # 2 x 32 images a step
  config.model.prototypes = 12 if name == 'swav' else 0
  if not registry.get(name).predictor:
    config.model.predictor = 'none'
  for field, value in overrides:
    config.update_from_flattened_dict({field: value})
  return config


def _first_step(config, devices):
  """(loss the step reports, the method's loss on the same outputs, state
  before, state after), fetched to the host."""
  from simsiam_jax.methods import registry  # pylint: disable=g-import-not-at-top
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
  init = state_lib.simsiam_initializer(model, tx, (16, 16, 3),
                                       registry.extra_init(config))
  state = state_lib.create(init, mesh, jax.random.key(0))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  z1, z2, p1, p2 = model.apply(variables, batch['view1'], batch['view2'],
                               train=True, mutable=['batch_stats'])[0]
  out = {'z1': z1, 'z2': z2, 'p1': p1, 'p2': p2, 'extra': state.extra,
         'params': state.params, 'epoch': 0.0}
  if registry.get(config.method).target:  # at step 0 the online copy
    for v in (1, 2):
      out[f't{v}'] = model.apply(variables, batch[f'view{v}'], train=True,
                                 method='represent',
                                 mutable=['batch_stats'])[0][1]
  want = registry.get(config.method).loss(out, config)
  before = jax.device_get(state)
  step = train.make_train_step(config, mesh, schedule, num_train_steps=64)
  state, metrics = step(state, parallel.host_to_global(batch, mesh))
  return float(metrics['loss']), float(want), before, jax.device_get(state)


@functools.lru_cache(maxsize=None)
def _step_of(name, num_devices, overrides=()):
  """_first_step of method `name` (with config `overrides`, pairs) on the
  first `num_devices` devices, once."""
  return _first_step(_method_config(name, overrides),
                     jax.devices()[:num_devices])


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _close(a, b, atol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


HYBRID = (('model.predictor', 'mlp'),)
HYBRID_SG = HYBRID + (('simclr.stop_gradient', True),)


@pytest.mark.parametrize('name,overrides', [
    ('simclr', ()), ('moco_v2', ()), ('byol', ()), ('swav', ()),
    ('barlow_twins', ()), ('vicreg', ()), ('simclr', HYBRID),
    ('simclr', HYBRID_SG), ('swav', HYBRID)])
def test_the_train_step_takes_the_method_loss_on_1_and_8_devices(
    name, overrides):
  got1, want1, _, after1 = _step_of(name, 1, overrides)
  got8, _, _, after8 = _step_of(name, 8, overrides)
  np.testing.assert_allclose(got1, want1, rtol=1e-5)
  np.testing.assert_allclose(got8, got1, rtol=1e-5)
  _close(after1.params, after8.params)
  _close(after1.extra, after8.extra)
  assert ('predictor' in after1.params) == (name == 'byol' or
                                            overrides != ())
  assert ('prototypes' in after1.params) == (name == 'swav')


@pytest.mark.parametrize('name', ['moco_v2', 'byol'])
def test_the_target_is_the_ema_of_the_online_network(name):
  config = _method_config(name)
  _, _, before, after = _step_of(name, 8)
  tau = (config.moco.momentum if name == 'moco_v2' else
         float(target.momentum(0, config.byol.tau_base, 64, cosine=True)))
  want = jax.tree.map(lambda t, o: tau * t + (1 - tau) * o,
                      before.extra['target'], target.online_part(after.params))
  _close(after.extra['target'], want, atol=1e-7)
  # The target moved, and less than the online network did.
  moved = _max_diff(after.extra['target'], before.extra['target'])
  assert 0 < moved < _max_diff(target.online_part(after.params),
                               before.extra['target'])


def test_moco_enqueues_both_views_keys_after_the_step():
  _, _, before, after = _step_of('moco_v2', 8)
  old, new = (np.asarray(s.extra['queue']['keys']) for s in (before, after))
  # 64 slots, 2 x 16 keys a step: the first 32 slots now hold unit keys of
  # this step, the other 32 the start's.
  assert int(before.extra['queue']['ptr']) == 0
  assert int(after.extra['queue']['ptr']) == 32
  np.testing.assert_allclose(np.linalg.norm(new[:32], axis=1), 1.0, rtol=1e-5)
  assert not np.allclose(new[:32], old[:32])
  np.testing.assert_array_equal(new[32:], old[32:])


@pytest.mark.parametrize('name', ['moco_v2', 'byol'])
def test_a_resumed_run_equals_a_straight_one(tmp_path, name):
  """The target network and the queue are checkpointed with the rest."""
  import shutil  # pylint: disable=g-import-not-at-top
  from simsiam_jax import pretrained  # pylint: disable=g-import-not-at-top
  from simsiam_jax import train  # pylint: disable=g-import-not-at-top
  config = _method_config(name)
  config.num_train_steps = 8  # checkpoints every 2 steps, the last 3 kept
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train.train_and_evaluate(config, str(straight))
  # The same run as if stopped after its checkpoint at step 4.
  shutil.copytree(straight, resumed)
  for name in ('6', '8', '6.digests.json', '8.digests.json'):
    path = resumed / 'checkpoints' / name
    shutil.rmtree(path) if path.is_dir() else path.unlink()
  (resumed / 'summary.json').unlink()
  train.train_and_evaluate(config, str(resumed))
  mesh = parallel.create_mesh()
  (_, _, a), (_, _, b) = (pretrained.read_run(str(d), mesh)
                          for d in (straight, resumed))
  assert int(a.step) == int(b.step) == 8
  if name == 'moco_v2':
    assert int(a.extra['queue']['ptr']) == (8 * 32) % 64
  assert _max_diff(a.extra['target'], target.online_part(a.params)) > 0
  for x, y in zip(jax.tree.leaves((a.params, a.extra)),
                  jax.tree.leaves((b.params, b.extra))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_moco_queue_that_the_keys_do_not_fill_evenly_is_a_config_error():
  from simsiam_jax import config_check  # pylint: disable=g-import-not-at-top
  from simsiam_jax import errors  # pylint: disable=g-import-not-at-top
  config = _method_config('moco_v2')
  config_check.check(config)
  config.moco.queue_size = 48  # not a multiple of 2 x 16
  with pytest.raises(errors.ConfigError, match='moco.queue_size=48'):
    config_check.check(config)


def np_nt_xent_hybrid(p1, p2, z1, z2, t):
  """Anchors p, candidates z: p_a,i against every z but z_a,i."""
  p, z = _unit(np.concatenate([p1, p2])), _unit(np.concatenate([z1, z2]))
  n = len(p1)
  total = 0.0
  for i in range(2 * n):
    others = [j for j in range(2 * n) if j != i]
    logits = np.array([p[i] @ z[j] / t for j in others])
    total -= _log_softmax(logits)[others.index((i + n) % (2 * n))]
  return total / (2 * n)


def test_simclr_with_a_predictor_against_numpy_and_its_stop_gradient():
  z1, z2 = (jnp.asarray(z, jnp.float32) for z in _pair(4))
  p1, p2 = (jnp.asarray(z, jnp.float32) for z in _pair(5))
  got = float(simclr.nt_xent(z1, z2, 0.5, p1, p2))
  np.testing.assert_allclose(
      got, np_nt_xent_hybrid(*(np.asarray(x) for x in (p1, p2, z1, z2)), 0.5),
      rtol=2e-5)
  # p = z is NT-Xent itself.
  np.testing.assert_allclose(float(simclr.nt_xent(z1, z2, 0.5, z1, z2)),
                             float(simclr.nt_xent(z1, z2, 0.5)), rtol=1e-6)
  # Stop-gradient: no gradient reaches the candidates, some the anchors.
  loss = lambda z1, z2, p1: simclr.nt_xent(z1, z2, 0.5, p1, p2,
                                           stop_gradient=True)
  gz1, gz2, gp1 = jax.grad(loss, argnums=(0, 1, 2))(z1, z2, p1)
  assert np.all(np.asarray(gz1) == 0.0) and np.all(np.asarray(gz2) == 0.0)
  assert np.any(np.asarray(gp1) != 0.0)
  gz1 = jax.grad(lambda z1: simclr.nt_xent(z1, z2, 0.5, p1, p2))(z1)
  assert np.any(np.asarray(gz1) != 0.0)


def test_swav_with_a_predictor_predicts_the_codes_of_z_from_p():
  z1, z2 = _pair(6)
  p1, p2 = _pair(7)
  s = lambda x: _unit(x) @ _unit(PROTOS).T
  q1, q2 = np_sinkhorn(s(z1), 0.05, 3), np_sinkhorn(s(z2), 0.05, 3)
  ce = lambda q, x: -(q * _log_softmax(x / 0.1)).sum(-1).mean()
  want = 0.5 * (ce(q1, s(p2)) + ce(q2, s(p1)))
  sc = lambda x: swav.prototype_scores(jnp.asarray(x, jnp.float32), PROTOS)
  got = swav.swav_loss(sc(z1), sc(z2), 0.1, 0.05, 3, sc(p1), sc(p2))
  np.testing.assert_allclose(float(got), want, rtol=2e-5)


def test_swav_prototypes_get_no_gradient_in_the_first_epoch():
  config = _method_config('swav')
  z1, z2 = (jnp.asarray(z, jnp.float32) for z in _pair(8))

  def loss(prototypes, epoch):
    out = {'z1': z1, 'z2': z2, 'p1': z1, 'p2': z2, 'epoch': epoch,
           'params': {'prototypes': prototypes}}
    return swav.METHOD.loss(out, config)

  protos = jnp.asarray(PROTOS, jnp.float32)
  assert config.swav.freeze_prototypes_epochs == 1.0
  frozen = jax.grad(loss)(protos, 0.99)
  assert np.all(np.asarray(frozen) == 0.0)
  assert np.any(np.asarray(jax.grad(loss)(protos, 1.0)) != 0.0)
  # The loss itself does not depend on the freeze.
  assert float(loss(protos, 0.5)) == float(loss(protos, 1.5))
  # Normalised inside the loss: the prototypes' scale changes nothing.
  np.testing.assert_allclose(float(loss(3.0 * protos, 2.0)),
                             float(loss(protos, 2.0)), rtol=1e-6)


def test_swav_prototypes_start_as_unit_rows_and_train_after_the_freeze():
  _, _, before, after = _step_of('swav', 8)
  protos = np.asarray(before.params['prototypes'])
  assert protos.shape == (12, 32)  # tiny's proj_dim
  np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, rtol=1e-5)
  # Step 0 is in the frozen first epoch: weight decay alone moved them.
  np.testing.assert_allclose(np.asarray(after.params['prototypes']),
                             protos * np.asarray(after.params['prototypes'])[0, 0]
                             / protos[0, 0], rtol=1e-5)
  _, _, _, trained = _step_of('swav', 8,
                              (('swav.freeze_prototypes_epochs', 0.0),))
  moved = np.asarray(trained.params['prototypes']) - protos
  assert not np.allclose(moved / protos, moved[0, 0] / protos[0, 0])


def test_byol_without_momentum_targets_the_online_network_of_the_step():
  overrides = (('byol.tau_base', 0.0), ('byol.tau_schedule', 'constant'))
  got, want, _, after = _step_of('byol', 8, overrides)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for x, y in zip(jax.tree.leaves(after.extra['target']),
                  jax.tree.leaves(target.online_part(after.params))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_which_methods_take_a_predictor_and_what_swav_needs():
  from simsiam_jax import config_check  # pylint: disable=g-import-not-at-top
  from simsiam_jax import errors  # pylint: disable=g-import-not-at-top
  for name in ('simclr', 'swav'):
    config_check.check(_method_config(name, HYBRID))  # the hybrids
  for name in ('moco_v2', 'barlow_twins', 'vicreg'):
    with pytest.raises(errors.ConfigError, match='has no predictor'):
      config_check.check(_method_config(name, HYBRID))
  with pytest.raises(errors.ConfigError, match='model.prototypes'):
    config_check.check(_method_config('swav', (('model.prototypes', 0),)))
  with pytest.raises(errors.ConfigError, match='tau_schedule'):
    config_check.check(_method_config('byol', (('byol.tau_schedule', 'x'),)))
