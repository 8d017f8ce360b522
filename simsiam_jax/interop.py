"""Backbone weights to and from torchvision's ResNet `state_dict` layout.

Our ResNet mirrors torchvision's (v1.5 strides, bias-free convolutions,
torch-style padding), so the mapping is one to one:

  conv1/kernel [kh, kw, in, out]   <-> conv1.weight [out, in, kh, kw]
  bn1/scale, bn1/bias              <-> bn1.weight, bn1.bias
  bn1 running mean / var           <-> bn1.running_mean, bn1.running_var
  layer2_0/downsample_conv         <-> layer2.0.downsample.0
  layer2_0/downsample_bn           <-> layer2.0.downsample.1

The classifier (`fc`) is not part of our backbone: exported dicts have none
(load them into torchvision with strict=False, as the official linear-eval
script does). Arrays are numpy; `main` converts to torch tensors.
"""

import re

import flax
import numpy as np

# The official SimSiam checkpoint: {'state_dict': {'module.encoder.' + key}}.
SIMSIAM_PREFIX = 'module.encoder.'


def _torch_module(path: tuple[str, ...]) -> str:
  parts = []
  for name in path:
    m = re.fullmatch(r'layer(\d+)_(\d+)', name)
    if m:
      parts.append(f'layer{m.group(1)}.{m.group(2)}')
    elif name == 'downsample_conv':
      parts.append('downsample.0')
    elif name == 'downsample_bn':
      parts.append('downsample.1')
    else:
      parts.append(name)
  return '.'.join(parts)


def _flax_module(torch_module: str) -> tuple[str, ...]:
  name = re.sub(r'layer(\d+)\.(\d+)', r'layer\1_\2', torch_module)
  name = name.replace('downsample.0', 'downsample_conv')
  name = name.replace('downsample.1', 'downsample_bn')
  return tuple(name.split('.'))


def backbone_to_torchvision(params, batch_stats) -> dict[str, np.ndarray]:
  """Our backbone variables -> torchvision ResNet state_dict (without fc)."""
  out = {}
  for path, value in flax.traverse_util.flatten_dict(params).items():
    module, leaf = _torch_module(path[:-1]), path[-1]
    value = np.asarray(value)
    if leaf == 'kernel':
      out[f'{module}.weight'] = value.transpose(3, 2, 0, 1)
    elif leaf == 'scale':
      out[f'{module}.weight'] = value
    elif leaf == 'bias':
      out[f'{module}.bias'] = value
    else:
      raise ValueError(f'Unexpected backbone parameter {"/".join(path)}.')
  for path, value in flax.traverse_util.flatten_dict(batch_stats).items():
    module, leaf = _torch_module(path[:-1]), path[-1]
    name = {'mean': 'running_mean', 'var': 'running_var'}[leaf]
    out[f'{module}.{name}'] = np.asarray(value)
    out[f'{module}.num_batches_tracked'] = np.array(0, np.int64)
  return out


def torchvision_to_backbone(state_dict) -> tuple[dict, dict]:
  """torchvision ResNet state_dict (numpy values) -> (params, batch_stats).

  `fc.*` and `num_batches_tracked` are dropped; a `module.encoder.` prefix
  (the official SimSiam checkpoint) is removed.
  """
  params, stats = {}, {}
  for key, value in state_dict.items():
    key = key[len(SIMSIAM_PREFIX):] if key.startswith(SIMSIAM_PREFIX) else key
    if key.startswith('fc.') or key.endswith('num_batches_tracked'):
      continue
    module, leaf = key.rsplit('.', 1)
    path = _flax_module(module)
    value = np.asarray(value)
    if leaf == 'weight' and value.ndim == 4:
      params[path + ('kernel',)] = value.transpose(2, 3, 1, 0)
    elif leaf == 'weight':
      params[path + ('scale',)] = value
    elif leaf == 'bias':
      params[path + ('bias',)] = value
    elif leaf in ('running_mean', 'running_var'):
      stats[path + (leaf[len('running_'):],)] = value
    else:
      raise ValueError(f'Unexpected torchvision key {key!r}.')
  return (flax.traverse_util.unflatten_dict(params),
          flax.traverse_util.unflatten_dict(stats))


def to_simsiam_layout(state_dict: dict) -> dict:
  """The official SimSiam checkpoint layout, as its main_lincls.py loads it."""
  return {'state_dict': {SIMSIAM_PREFIX + k: v for k, v in state_dict.items()}}
