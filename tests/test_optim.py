"""Learning-rate rules, schedules and parameter groups against hand-written references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from simsiam_jax import optim


def _config(**optim_overrides):
  c = default.get_config()
  c.batch_size = 512
  c.optim.base_lr = 0.05
  for k, v in optim_overrides.items():
    c.optim[k] = v
  return c


def _params():
  return {
      'backbone': {'conv': {'kernel': jnp.ones((3, 3, 2, 4))},
                   'bn': {'scale': jnp.ones((4,)), 'bias': jnp.zeros((4,))}},
      'projector': {'dense0': {'kernel': jnp.ones((4, 4))}},
      'predictor': {'dense1': {'kernel': jnp.ones((4, 4)),
                               'bias': jnp.zeros((4,))}},
  }


def _run(tx, params, grads, steps):
  """Parameter updates of `steps` optimiser steps with fixed gradients."""
  state = tx.init(params)
  updates_seen = []
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    updates_seen.append(updates)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  return params, updates_seen


def test_linear_scaling_rule():
  assert optim.scaled_lr(0.05, 512) == pytest.approx(0.1)
  assert optim.scaled_lr(0.03, 512) == pytest.approx(0.06)


def test_cosine_per_step_and_per_epoch():
  oc = _config().optim
  per_step = optim.create_schedule(oc, 0.1, steps_per_epoch=10,
                                   num_train_steps=100)
  for s in (0, 7, 50, 99, 100):
    assert float(per_step(s)) == pytest.approx(
        0.1 * 0.5 * (1 + math.cos(math.pi * s / 100)), abs=1e-7)
  oc.schedule = 'cosine_epoch'
  per_epoch = optim.create_schedule(oc, 0.1, steps_per_epoch=10,
                                    num_train_steps=100)
  # The official code: constant within an epoch, cos(pi * epoch / epochs).
  for s in (0, 9, 10, 19, 55):
    epoch = s // 10
    assert float(per_epoch(s)) == pytest.approx(
        0.1 * 0.5 * (1 + math.cos(math.pi * epoch / 10)), abs=1e-7)


def test_warmup_then_cosine():
  oc = _config(warmup_epochs=2.0).optim
  sched = optim.create_schedule(oc, 0.1, steps_per_epoch=10,
                                num_train_steps=100)
  assert float(sched(0)) == pytest.approx(0.0)
  assert float(sched(10)) == pytest.approx(0.05)
  assert float(sched(20)) == pytest.approx(0.1)
  assert float(sched(60)) == pytest.approx(0.05, abs=1e-6)
  with pytest.raises(ValueError, match='warm-up'):
    optim.create_schedule(_config(warmup_epochs=20.0).optim, 0.1, 10, 100)


def test_sgd_matches_torch_semantics():
  """g += wd * p; buf = m * buf + g; p -= lr * buf (torch.optim.SGD)."""
  c = _config(schedule='constant', weight_decay=0.1, momentum=0.9,
              fix_pred_lr=False)
  tx, _ = optim.create_optimizer(c, steps_per_epoch=10, num_train_steps=100)
  params = _params()
  grads = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), params)
  got, _ = _run(tx, params, grads, steps=3)
  lr = optim.scaled_lr(0.05, 512)
  p, buf = 1.0, 0.0
  for _ in range(3):
    g = 0.5 + 0.1 * p
    buf = 0.9 * buf + g
    p -= lr * buf
  np.testing.assert_allclose(got['backbone']['conv']['kernel'], p, rtol=1e-6)


def test_fix_pred_lr_keeps_predictor_constant():
  c = _config(momentum=0.0, weight_decay=0.0, fix_pred_lr=True)
  steps = 20
  tx, sched = optim.create_optimizer(c, steps_per_epoch=5,
                                     num_train_steps=steps)
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  _, updates = _run(tx, params, grads, steps)
  peak = optim.scaled_lr(0.05, 512)
  for step, u in enumerate(updates):
    # With unit gradients and no momentum, -update is the learning rate.
    np.testing.assert_allclose(-u['predictor']['dense1']['kernel'], peak,
                               rtol=1e-6)
    np.testing.assert_allclose(-u['backbone']['conv']['kernel'],
                               float(sched(step)), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(-u['projector']['dense0']['kernel'],
                               float(sched(step)), rtol=1e-5, atol=1e-9)
  assert float(sched(steps - 1)) < 0.01 * peak


def test_predictor_decays_without_fix_pred_lr():
  c = _config(momentum=0.0, weight_decay=0.0, fix_pred_lr=False)
  tx, sched = optim.create_optimizer(c, steps_per_epoch=5, num_train_steps=20)
  params = _params()
  _, updates = _run(tx, params, jax.tree.map(jnp.ones_like, params), 10)
  np.testing.assert_allclose(-updates[9]['predictor']['dense1']['kernel'],
                             float(sched(9)), rtol=1e-5)


def test_fixed_random_predictor_is_frozen():
  c = _config()
  c.model.predictor = 'fixed_random'
  tx, _ = optim.create_optimizer(c, steps_per_epoch=5, num_train_steps=20)
  params = _params()
  new, _ = _run(tx, params, jax.tree.map(jnp.ones_like, params), 3)
  np.testing.assert_array_equal(new['predictor']['dense1']['kernel'], 1.0)
  assert float(jnp.abs(new['backbone']['conv']['kernel'] - 1).max()) > 0


def test_weight_decay_mask_excludes_bn_and_bias():
  c = _config(schedule='constant', momentum=0.0, weight_decay=0.5,
              weight_decay_mask='no_bn_bias')
  tx, _ = optim.create_optimizer(c, steps_per_epoch=5, num_train_steps=20)
  params = _params()
  _, updates = _run(tx, params, jax.tree.map(jnp.zeros_like, params), 1)
  # Zero gradients: only weight decay moves a parameter.
  np.testing.assert_array_equal(updates[0]['backbone']['bn']['scale'], 0.0)
  assert float(jnp.abs(updates[0]['backbone']['conv']['kernel']).max()) > 0
  c.optim.weight_decay_mask = 'all'
  tx, _ = optim.create_optimizer(c, steps_per_epoch=5, num_train_steps=20)
  _, updates = _run(tx, params, jax.tree.map(jnp.zeros_like, params), 1)
  assert float(jnp.abs(updates[0]['backbone']['bn']['scale']).max()) > 0


def test_lars_trust_ratio():
  """First LARS step on a kernel: lr * tc * ||w|| / ||g + wd w|| * (g + wd w)."""
  c = _config(optimizer='lars', schedule='constant', weight_decay=0.0,
              lars_trust_coefficient=0.001)
  tx, _ = optim.create_optimizer(c, steps_per_epoch=5, num_train_steps=20)
  params = _params()
  grads = jax.tree.map(lambda p: 2.0 * jnp.ones_like(p), params)
  _, updates = _run(tx, params, grads, 1)
  w = np.ones((3, 3, 2, 4))
  g = 2.0 * np.ones_like(w)
  lr = optim.scaled_lr(0.05, 512)
  want = -lr * 0.001 * np.linalg.norm(w) / np.linalg.norm(g) * g
  np.testing.assert_allclose(updates[0]['backbone']['conv']['kernel'], want,
                             rtol=1e-5)
  # BN parameters are not rescaled by the trust ratio.
  np.testing.assert_allclose(updates[0]['backbone']['bn']['scale'], -lr * 2.0,
                             rtol=1e-5)
