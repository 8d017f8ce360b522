"""torchvision ResNet weights in and out, checked against PyTorch itself.

Runs where torch is importable (.ci/run installs the CPU build); torchvision is
not needed: the reference ResNet below follows torchvision's module layout.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
nn = torch.nn

from simsiam_jax import interop  # pylint: disable=g-import-not-at-top,wrong-import-position
from simsiam_jax.models import resnet  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.conftest import REPO_ROOT  # pylint: disable=g-import-not-at-top,wrong-import-position


class TorchBasic(nn.Module):
  expansion = 1

  def __init__(self, cin, c, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c)
    self.downsample = None
    if stride != 1 or cin != c:
      self.downsample = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False),
                                      nn.BatchNorm2d(c))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    r = x if self.downsample is None else self.downsample(x)
    return torch.relu(y + r)


class TorchBottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, c, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c)
    self.conv3 = nn.Conv2d(c, 4 * c, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(4 * c)
    self.downsample = None
    if stride != 1 or cin != 4 * c:
      self.downsample = nn.Sequential(
          nn.Conv2d(cin, 4 * c, 1, stride, bias=False), nn.BatchNorm2d(4 * c))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    r = x if self.downsample is None else self.downsample(x)
    return torch.relu(y + r)


class TorchResNet(nn.Module):
  """torchvision.models.ResNet's layout and forward, without fc."""

  def __init__(self, depth, width=64, stages=None, stem='imagenet'):
    super().__init__()
    block = TorchBottleneck if depth >= 50 else TorchBasic
    stages = stages or resnet.STAGE_SIZES[depth]
    if stem == 'imagenet':
      self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
    else:
      self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
      self.maxpool = nn.Identity()
    self.bn1 = nn.BatchNorm2d(width)
    cin = width
    for i, n in enumerate(stages):
      blocks = []
      for j in range(n):
        blocks.append(block(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
        cin = width * 2**i * block.expansion
      setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
    self.num_stages = len(stages)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for i in range(self.num_stages):
      x = getattr(self, f'layer{i + 1}')(x)
    return x.mean(dim=(2, 3))


def _randomised(model, seed=0):
  """torch's default conv init; random BN affine and statistics (so every
  mapping matters) of a scale that keeps activations near 1."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.Conv2d):
        m.reset_parameters()
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return model.eval()


def _numpy_sd(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize('depth', [18, 50])
def test_imported_weights_give_pytorch_features(depth):
  torch_model = _randomised(TorchResNet(depth))
  x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
  with torch.no_grad():
    want = torch_model(torch.from_numpy(x)).numpy()
  params, stats = interop.torchvision_to_backbone(_numpy_sd(torch_model))
  ours = resnet.ResNet(depth=depth)
  got = jax.jit(lambda v, x: ours.apply(v, x, train=False))(
      {'params': params, 'batch_stats': stats},
      jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert 0.1 < np.abs(want).max() < 100  # a scale where 1e-4 means something
  assert np.max(np.abs(np.asarray(got) - want)) < 1e-4


def test_export_import_round_trip():
  sd = _numpy_sd(_randomised(TorchResNet(50)))
  params, stats = interop.torchvision_to_backbone(sd)
  back = interop.backbone_to_torchvision(params, stats)
  assert set(back) == set(sd)
  for k, v in sd.items():
    if not k.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(back[k], v)
  # Official layout: what main_lincls.py strips back to torchvision keys.
  official = interop.to_simsiam_layout(back)['state_dict']
  again = interop.torchvision_to_backbone(official)
  for a, b in zip(jax.tree.leaves((params, stats)), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)


def test_export_cli_loads_into_pytorch(tmp_path):
  workdir = tmp_path / 'run'
  run = subprocess.run(
      [sys.executable, '-m', 'simsiam_jax.main', '--config=configs/tiny.py',
       f'--workdir={workdir}', '--config.num_train_steps=2'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  out = tmp_path / 'backbone.pth'
  exp = subprocess.run(
      [sys.executable, '-m', 'simsiam_jax.export', f'--workdir={workdir}',
       f'--out={out}'], cwd=REPO_ROOT, capture_output=True, text=True,
      timeout=300)
  assert exp.returncode == 0, exp.stderr[-3000:]
  torch_model = TorchResNet(18, width=8, stages=(1, 1, 1, 1), stem='cifar')
  # strict: every key of the (fc-less) torchvision layout, and nothing else.
  torch_model.load_state_dict(torch.load(out), strict=True)
  # Same features as our model restored from the same checkpoint.
  from simsiam_jax import backbone as backbone_lib  # pylint: disable=g-import-not-at-top
  loaded = backbone_lib.load_backbone(str(workdir))
  params = loaded.variables['params']
  stats = loaded.variables['batch_stats']
  assert loaded.step == 2
  x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
  with torch.no_grad():
    want = torch_model.eval()(torch.from_numpy(x)).numpy()
  ours = resnet.ResNet(depth=18, width=8, stage_sizes=(1, 1, 1, 1),
                       stem='cifar')
  got = ours.apply({'params': params, 'batch_stats': stats},
                   jnp.asarray(x.transpose(0, 2, 3, 1)), train=False)
  assert np.max(np.abs(np.asarray(got) - want)) < 1e-4
