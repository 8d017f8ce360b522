"""ResNet backbones (He et al. 2016) in Flax Linen, laid out as torchvision's.

The parameter layout follows torchvision's ResNet (v1.5: the stride of a
bottleneck block sits on its 3x3 convolution; convolutions have no bias), so
parameter counts match torchvision and weights can be moved across. The
classifier is left out: the backbone returns the pooled feature
(512 for ResNet-18/34, 2048 for ResNet-50 and deeper).
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision's ResNet initialises convolutions with kaiming_normal(fan_out).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# Blocks per stage and block type of the standard depths.
STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


CONV_IMPLS = ('auto', 'xla', 'im2col')


def _im2col(x, kernel_size, strides, padding):
  """[B, H, W, C] -> patches [B, H', W', kh * kw * C], ordered as the kernel.

  Built from a pad and strided slices only, so its transpose (the input
  gradient) is pads and adds, never a convolution.
  """
  (kh, kw), (sh, sw) = kernel_size, strides
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  out_h = (x.shape[1] - kh) // sh + 1
  out_w = (x.shape[2] - kw) // sw + 1
  cols = [x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
          for i in range(kh) for j in range(kw)]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def uses_im2col(impl: str, in_hw: Sequence[int], kernel_size: Sequence[int],
                strides: Sequence[int]) -> bool:
  """Whether a convolution of this shape runs as im2col + one matrix product.

  'auto' picks it where the output has fewer pixels than the kernel window
  (late, tiny feature maps): XLA:CPU's algebraic simplifier turns those, and
  their input gradients, into window-reversed convolutions that no CPU
  library takes, and they run as naive loops. 1x1 convolutions are plain
  matrix products in any case.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f'conv impl must be one of {CONV_IMPLS}, got {impl!r}.')
  if impl != 'auto':
    return impl == 'im2col'
  if tuple(kernel_size) == (1, 1):
    return True
  kh, kw = kernel_size
  out_pixels = ((in_hw[0] - 1) // strides[0] + 1) * (
      (in_hw[1] - 1) // strides[1] + 1)
  return out_pixels < kh * kw


class Conv(nn.Module):
  """A bias-free 2-D convolution padded as torch's Conv2d(padding=k // 2).

  Flax's 'SAME' pads a strided convolution asymmetrically, torch
  symmetrically; torch's padding keeps outputs equal to torchvision's. The
  parameter is nn.Conv's ('kernel', [kh, kw, in, out]); `impl` chooses, by
  shape at trace time, between XLA's convolution and im2col + a matrix
  product (see `uses_im2col`); both compute the same function.
  """
  features: int
  kernel_size: Sequence[int]
  strides: int = 1
  impl: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Any] = conv_init

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    strides = (self.strides, self.strides)
    padding = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    kernel = self.param('kernel', self.kernel_init,
                        (kh, kw, x.shape[-1], self.features), self.param_dtype)
    x, kernel = jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype)
    if uses_im2col(self.impl, x.shape[1:3], self.kernel_size, strides):
      patches = _im2col(x, self.kernel_size, strides, padding)
      return jnp.dot(patches, kernel.reshape(-1, self.features))
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class _Block(nn.Module):
  """Fields and the shortcut shared by the two residual blocks."""
  filters: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  zero_init_residual: bool

  def last_norm(self, name: str) -> nn.Module:
    # A zero scale makes each block start as the identity (torchvision's
    # zero_init_residual, used by the official SimSiam code).
    init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    return self.norm(name=name, scale_init=init)

  def add_shortcut(self, x, y):
    """relu(shortcut(x) + y); a 1x1 strided conv + BN where shapes differ."""
    if x.shape != y.shape:
      x = self.conv(y.shape[-1], (1, 1), self.strides,
                    name='downsample_conv')(x)
      x = self.norm(name='downsample_bn')(x)
    return nn.relu(x + y)


class BasicBlock(_Block):
  """Two 3x3 convolutions; used by ResNet-18 and ResNet-34."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), self.strides, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), name='conv2')(y)
    return self.add_shortcut(x, self.last_norm('bn2')(y))


class BottleneckBlock(_Block):
  """1x1 -> 3x3 (strided) -> 1x1 with 4x expansion; ResNet-50 and deeper."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (1, 1), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), self.strides, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(self.filters * 4, (1, 1), name='conv3')(y)
    return self.add_shortcut(x, self.last_norm('bn3')(y))


class ResNet(nn.Module):
  """ResNet backbone without the classifier.

  Attributes:
    depth: 18, 34, 50, 101 or 152 (picks the block type and default stages).
    width: channels of the first stage (64 in the standard networks).
    stage_sizes: blocks per stage; empty for the standard ones of `depth`.
    stage_widths: channels of each stage's blocks; empty: `width` doubled
      per stage (width, 2 width, 4 width, 8 width), as in every standard
      ResNet.
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (3x3 conv,
      stride `cifar_stem_stride`, no pool).
    cifar_stem_stride: stride of the cifar stem (1 as in the paper).
    zero_init_residual: zero-init the last BN scale of every block.
    dtype: compute dtype (e.g. bfloat16).
    param_dtype: parameter dtype (float32).
    bn_momentum: running-average decay (torch's momentum 0.1 is 0.9 here).
    conv_impl: 'auto' (by shape, see `uses_im2col`), 'xla' or 'im2col'.

  BatchNorm needs no axis name: under jit a sharded batch's mean is already
  the global one (SyncBN; parallel.py).
  """
  depth: int = 50
  width: int = 64
  stage_sizes: Sequence[int] = ()
  stage_widths: Sequence[int] = ()
  stem: str = 'imagenet'
  cifar_stem_stride: int = 1
  zero_init_residual: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool = True):
    """Maps images [B, H, W, C] to pooled features [B, feature_dim]."""
    if self.depth not in STAGE_SIZES:
      raise ValueError(f'ResNet depth must be one of {sorted(STAGE_SIZES)}, '
                       f'got {self.depth}.')
    stage_sizes = tuple(self.stage_sizes) or STAGE_SIZES[self.depth]
    stage_widths = tuple(self.stage_widths) or tuple(
        self.width * 2**i for i in range(len(stage_sizes)))
    if len(stage_widths) != len(stage_sizes):
      raise ValueError(f'model.stage_widths {stage_widths} needs one width per '
                       f'stage of {stage_sizes}.')
    block = BottleneckBlock if self.depth >= 50 else BasicBlock
    conv = functools.partial(Conv, impl=self.conv_impl, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                    momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                    param_dtype=self.param_dtype)

    x = jnp.asarray(x, self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.width, (7, 7), 2, name='conv1')(x)
      x = nn.relu(norm(name='bn1')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == 'cifar':
      x = conv(self.width, (3, 3), self.cifar_stem_stride, name='conv1')(x)
      x = nn.relu(norm(name='bn1')(x))
    else:
      raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}.")

    for i, num_blocks in enumerate(stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(stage_widths[i], strides, conv, norm,
                  self.zero_init_residual, name=f'layer{i + 1}_{j}')(x)
    return jnp.mean(x, axis=(1, 2))
