"""The SimSiam network: a shared encoder (backbone + projector) and a predictor."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from simsiam_jax.configs import default
from simsiam_jax.models import heads
from simsiam_jax.models import resnet

PREDICTORS = ('mlp', 'none', 'fixed_random')


class SimSiam(nn.Module):
  """SimSiam (Chen & He 2021).

  The encoder runs once per view, as in the official code: each view's BN
  statistics come from that view alone, over the global batch. (Running both
  views as one 2B batch would mix their statistics and gives other numbers.)

  Attributes:
    backbone: the ResNet.
    proj_layers, proj_hidden_dim, proj_dim: projector shape.
    pred_hidden_dim: predictor bottleneck width.
    predictor_kind: 'mlp'; 'none' (p = z, paper Table 1b); 'fixed_random' (the MLP
      kept at its random initialisation: the optimiser gives its group no
      update, see optim.create_optimizer).
    head_bn: BN placement in the MLPs (see heads.py).
    head_init: the MLPs' Dense initialisation, 'torch' (official) or 'flax'.
    prototypes: SwAV's number of prototypes (0: none): a [prototypes,
      proj_dim] parameter 'prototypes' with unit rows at initialisation
      (SwAV's nn.Linear, normalised before its first use). The network's
      outputs do not use it; SwAV's loss reads it (methods/swav.py).
  """
  backbone: resnet.ResNet
  proj_layers: int = 3
  proj_hidden_dim: int = 2048
  proj_dim: int = 2048
  pred_hidden_dim: int = 512
  predictor_kind: str = 'mlp'
  head_bn: str = 'default'
  head_init: str = 'torch'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  prototypes: int = 0

  def setup(self):
    if self.predictor_kind not in PREDICTORS:
      raise ValueError(f'predictor must be one of {PREDICTORS}, '
                       f'got {self.predictor_kind!r}.')
    norm = functools.partial(nn.BatchNorm, momentum=self.bn_momentum,
                             epsilon=1e-5, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    self.projector = heads.projector(
        self.proj_layers, self.proj_hidden_dim, self.proj_dim, self.head_bn,
        norm, self.dtype, self.param_dtype, self.head_init)
    if self.predictor_kind != 'none':
      self.predictor = heads.predictor(
          self.pred_hidden_dim, self.proj_dim, self.head_bn, norm, self.dtype,
          self.param_dtype, self.head_init)
    if self.prototypes > 0:
      self.prototype_vectors = self.param(
          'prototypes', _unit_rows, (self.prototypes, self.proj_dim),
          self.param_dtype)

  def features(self, x, train: bool = False):
    """Pooled backbone features [B, D] of images [B, H, W, C]."""
    return self.backbone(x, train=train)

  def represent(self, x, train: bool = False):
    """Pooled backbone features h [B, D] and their projection z [B, proj_dim]."""
    h = self.backbone(x, train=train)
    return h, self.projector(h, train)

  def embed(self, x, train: bool = True):
    """Projection z and prediction p of one view."""
    # BN runs on batch statistics while training, running averages otherwise.
    h = self.backbone(x, train=train)
    z = self.projector(h, train)
    p = z if self.predictor_kind == 'none' else self.predictor(z, train)
    return z, p

  def __call__(self, x1, x2, train: bool = True):
    """Two views [B, H, W, C] -> (z1, z2, p1, p2), each [B, proj_dim]."""
    z1, p1 = self.embed(x1, train)
    z2, p2 = self.embed(x2, train)
    return z1, z2, p1, p2


def _unit_rows(key, shape, dtype):
  """nn.Linear's uniform draw, each row scaled to unit norm."""
  bound = 1.0 / shape[1] ** 0.5
  w = jax.random.uniform(key, shape, jnp.float32, -bound, bound)
  return (w / jnp.linalg.norm(w, axis=1, keepdims=True)).astype(dtype)


def create_model(model_config: ml_collections.ConfigDict) -> SimSiam:
  """Builds SimSiam from `config.model`, saved with or without the fields
  added later (`default.MODEL_FIELDS_ADDED_LATER`)."""
  later = {k: model_config.get(k, v)
           for k, v in default.MODEL_FIELDS_ADDED_LATER.items()}
  dtype = jnp.dtype(model_config.dtype)
  param_dtype = jnp.dtype(model_config.param_dtype)
  backbone = resnet.ResNet(
      depth=model_config.depth,
      width=model_config.width,
      stage_sizes=tuple(model_config.stage_sizes),
      stage_widths=tuple(later['stage_widths']),
      stem=model_config.stem,
      cifar_stem_stride=model_config.cifar_stem_stride,
      zero_init_residual=model_config.zero_init_residual,
      conv_impl=later['conv_impl'],
      dtype=dtype, param_dtype=param_dtype)
  return SimSiam(
      backbone=backbone,
      proj_layers=model_config.proj_layers,
      proj_hidden_dim=model_config.proj_hidden_dim,
      proj_dim=model_config.proj_dim,
      pred_hidden_dim=model_config.pred_hidden_dim,
      predictor_kind=model_config.predictor,
      head_bn=model_config.head_bn,
      head_init=later['head_init'],
      prototypes=later['prototypes'],
      dtype=dtype, param_dtype=param_dtype)

