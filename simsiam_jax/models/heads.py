"""SimSiam's projection and prediction MLPs.

BatchNorm placement follows the official code, with the paper's Table 3
ablations behind `head_bn`:

  'none'     no BN in either MLP (every Dense then has a bias);
  'hidden'   BN after every hidden Dense of projector and predictor;
  'default'  'hidden' plus a BN without scale and bias on the projector output
             (the official code);
  'all'      'default' plus the same BN on the predictor output.

A Dense that feeds a BN has no bias: the BN's mean subtraction removes it.

Initialisation (`head_init`):

  'torch'  as `torch.nn.Linear` in the official code: weight
           kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)) (std
           1/sqrt(3 fan_in)), bias U(+-1/sqrt(fan_in));
  'flax'   Flax's Dense default: lecun normal (std 1/sqrt(fan_in)), zero bias.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

HEAD_BN = ('none', 'hidden', 'default', 'all')
HEAD_INITS = ('torch', 'flax')


def torch_linear_bias_init(fan_in: int):
  """`torch.nn.Linear`'s bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


# kaiming_uniform(a=sqrt(5)): gain^2 = 2 / (1 + 5), bound = gain sqrt(3 / fan_in).
torch_linear_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, 'fan_in', 'uniform')


def dense_inits(head_init: str, fan_in: int) -> dict:
  """Dense(kernel_init=..., bias_init=...) for `head_init`."""
  if head_init == 'flax':
    return {}
  if head_init == 'torch':
    return dict(kernel_init=torch_linear_kernel_init,
                bias_init=torch_linear_bias_init(fan_in))
  raise ValueError(f'head_init must be one of {HEAD_INITS}, got {head_init!r}.')


def _check_head_bn(head_bn: str):
  if head_bn not in HEAD_BN:
    raise ValueError(f'head_bn must be one of {HEAD_BN}, got {head_bn!r}.')


class MLP(nn.Module):
  """Dense layers with optional BN + ReLU between them.

  Attributes:
    widths: output width of each Dense layer.
    hidden_bn: BN after each hidden Dense.
    output_bn: BN (no scale, no bias) after the last Dense.
    dense_init: 'torch' or 'flax' (see the module's docstring).
  """
  widths: tuple[int, ...]
  hidden_bn: bool
  output_bn: bool
  norm: Callable[..., nn.Module]
  dense_init: str = 'torch'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    for i, width in enumerate(self.widths):
      last = i == len(self.widths) - 1
      use_bn = self.output_bn if last else self.hidden_bn
      x = nn.Dense(width, use_bias=not use_bn, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=f'dense{i}',
                   **dense_inits(self.dense_init, x.shape[-1]))(x)
      if use_bn:
        x = self.norm(use_running_average=not train, use_scale=not last,
                      use_bias=not last, name=f'bn{i}')(x)
      if not last:
        x = nn.relu(x)
    return x


def projector(num_layers: int, hidden_dim: int, out_dim: int, head_bn: str,
              norm, dtype, param_dtype, init: str = 'torch') -> MLP:
  """The projection MLP: 3 layers for ImageNet, 2 for CIFAR."""
  _check_head_bn(head_bn)
  if num_layers < 1:
    raise ValueError(f'projector needs at least 1 layer, got {num_layers}.')
  widths = (hidden_dim,) * (num_layers - 1) + (out_dim,)
  return MLP(widths, hidden_bn=head_bn != 'none',
             output_bn=head_bn in ('default', 'all'), norm=norm, dtype=dtype,
             param_dtype=param_dtype, dense_init=init)


def predictor(hidden_dim: int, out_dim: int, head_bn: str, norm, dtype,
              param_dtype, init: str = 'torch') -> MLP:
  """The prediction MLP: a bottleneck, out_dim -> hidden_dim -> out_dim."""
  _check_head_bn(head_bn)
  return MLP((hidden_dim, out_dim), hidden_bn=head_bn != 'none',
             output_bn=head_bn == 'all', norm=norm, dtype=dtype,
             param_dtype=param_dtype, dense_init=init)
