"""The comparison methods' losses against their official code's formulas in PyTorch.

Each reference follows the method's own repository line by line on one
process (SimCLR's is TensorFlow; its `add_contrastive_loss` is written here
with torch ops). Skipped where torch is not installed.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from simsiam_jax.methods import barlow_twins
from simsiam_jax.methods import byol
from simsiam_jax.methods import moco
from simsiam_jax.methods import simclr
from simsiam_jax.methods import swav
from simsiam_jax.methods import vicreg

torch = pytest.importorskip('torch')
F = torch.nn.functional

B, D = 32, 16


def _pair(seed):
  g = torch.Generator().manual_seed(seed)
  z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
  return z1, z1 + 0.5 * torch.randn(B, D, generator=g, dtype=torch.float64)


def _ours(fn, *tensors):
  return float(fn(*(jnp.asarray(t.numpy(), jnp.float32) for t in tensors)))


def _off_diagonal(x):  # Barlow Twins' and VICReg's helper
  n, m = x.shape
  return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def test_simclr_is_the_official_add_contrastive_loss_halved():
  h1, h2 = (F.normalize(h, dim=1) for h in _pair(0))
  t, large = 0.2, 1e9
  masks = F.one_hot(torch.arange(B), B).double()
  labels = F.one_hot(torch.arange(B), 2 * B).double()
  logits_aa = h1 @ h1.T / t - masks * large
  logits_bb = h2 @ h2.T / t - masks * large
  logits_ab, logits_ba = h1 @ h2.T / t, h2 @ h1.T / t
  ce = lambda logits: -(labels * F.log_softmax(logits, 1)).sum(1).mean()
  official = (ce(torch.cat([logits_ab, logits_aa], 1)) +
              ce(torch.cat([logits_ba, logits_bb], 1)))
  ours = _ours(lambda a, b: simclr.nt_xent(a, b, t), *_pair(0))
  np.testing.assert_allclose(2 * ours, float(official), rtol=1e-5)


def test_moco_is_the_official_logits_and_cross_entropy():
  q, k = _pair(1)
  queue = F.normalize(torch.randn(D, 64, dtype=torch.float64), dim=0)  # C x K
  qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
  l_pos = torch.einsum('nc,nc->n', [qn, kn]).unsqueeze(-1)
  l_neg = torch.einsum('nc,ck->nk', [qn, queue])
  logits = torch.cat([l_pos, l_neg], dim=1) / 0.2
  official = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
  ours = _ours(lambda a, b, c: moco.info_nce(a, b, c, 0.2), q, k, queue.T)
  np.testing.assert_allclose(ours, float(official), rtol=1e-5)


def test_byol_is_the_official_regression_loss_both_ways():
  p1, t2 = _pair(2)
  p2, t1 = _pair(3)
  def loss_fn(x, y):
    x, y = F.normalize(x, dim=-1, p=2), F.normalize(y, dim=-1, p=2)
    return 2 - 2 * (x * y).sum(dim=-1)
  official = (loss_fn(p1, t2) + loss_fn(p2, t1)).mean()
  ours = _ours(byol.byol_loss, p1, p2, t1, t2)
  np.testing.assert_allclose(ours, float(official), rtol=1e-5)


def test_swav_is_the_official_sinkhorn_and_swapped_prediction():
  z1, z2 = _pair(4)
  prototypes = torch.randn(24, D, dtype=torch.float64)
  w = F.normalize(prototypes, dim=1, p=2)
  output = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)]) @ w.T

  def distributed_sinkhorn(out, epsilon=0.05, iterations=3, world_size=1):
    q = torch.exp(out / epsilon).t()
    b, k = q.shape[1] * world_size, q.shape[0]
    q /= torch.sum(q)
    for _ in range(iterations):
      q /= torch.sum(q, dim=1, keepdim=True)
      q /= k
      q /= torch.sum(q, dim=0, keepdim=True)
      q /= b
    q *= b
    return q.t()

  loss = 0
  for crop_id in (0, 1):
    q = distributed_sinkhorn(output[B * crop_id:B * (crop_id + 1)])
    v = 1 - crop_id
    x = output[B * v:B * (v + 1)] / 0.1
    loss += -torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
  official = loss / 2
  ours = _ours(lambda a, b, p: swav.swav_loss(
      swav.prototype_scores(a, p), swav.prototype_scores(b, p), 0.1, 0.05, 3),
               z1, z2, prototypes)
  np.testing.assert_allclose(ours, float(official), rtol=1e-4)


def test_barlow_twins_is_the_official_batchnorm_cross_correlation():
  z1, z2 = _pair(5)
  bn = torch.nn.BatchNorm1d(D, affine=False).double().train()
  c = bn(z1).T @ bn(z2) / B
  on_diag = torch.diagonal(c).add(-1).pow(2).sum()
  official = on_diag + 0.0051 * _off_diagonal(c).pow(2).sum()
  ours = _ours(lambda a, b: barlow_twins.barlow_twins_loss(a, b, 0.0051),
               z1, z2)
  np.testing.assert_allclose(ours, float(official), rtol=1e-5)


def test_vicreg_is_the_official_forward():
  x, y = _pair(6)
  repr_loss = F.mse_loss(x, y)
  x, y = x - x.mean(dim=0), y - y.mean(dim=0)
  std_x = torch.sqrt(x.var(dim=0) + 0.0001)
  std_y = torch.sqrt(y.var(dim=0) + 0.0001)
  std_loss = (torch.mean(F.relu(1 - std_x)) / 2 +
              torch.mean(F.relu(1 - std_y)) / 2)
  cov_x, cov_y = (x.T @ x) / (B - 1), (y.T @ y) / (B - 1)
  cov_loss = (_off_diagonal(cov_x).pow(2).sum() / D +
              _off_diagonal(cov_y).pow(2).sum() / D)
  official = 25.0 * repr_loss + 25.0 * std_loss + 1.0 * cov_loss
  ours = _ours(lambda a, b: vicreg.vicreg_loss(a, b, 25.0, 25.0, 1.0),
               *_pair(6))
  np.testing.assert_allclose(ours, float(official), rtol=1e-5)
