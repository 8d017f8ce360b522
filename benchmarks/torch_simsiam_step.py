"""The same SimSiam train step in PyTorch, for comparison; also a long-lived worker.

The network is built from a *spec*: the widths of `config.model` (made by
`benchmarks/step_compare.torch_spec`), so both frameworks time the same
network. The ResNet is laid out as torchvision's (v1.5 bottlenecks: stride on
the 3x3; bias-free convolutions padded k // 2; kaiming fan_out; zero-init
residual), written out here because torchvision's ResNet cannot change its
base width or blocks per stage (the demo network is 16 wide, one block per
stage). Projector and predictor place BN as simsiam_jax/models/heads.py does
(a Linear that feeds a BN has no bias; the projector's output BN has no
affine). Loss: symmetric negative cosine with detached targets; SGD with
momentum and weight decay; channels_last; autocast to bf16 when the dtype is
bfloat16; optionally torch.compile of the whole step. On CUDA, float32 uses
TF32 for convolutions and matrix products, as XLA does by default.

Needs only torch, so it can run in another virtual environment.

Standalone (prints one JSON line):

  .venv/bin/python benchmarks/torch_simsiam_step.py --depth=18 --stem=cifar \\
      --image_size=32 --batch_size=128 --dtype=float32 [--compile]

Worker (started by benchmarks/step_compare.py): one JSON command per line on
stdin, one JSON answer per line on stdout (anything else the process prints
goes to stderr):

  {"op": "setup", "name": N, "spec": {...}, "compile": false}
      -> {"first_step_s", "params", "framework", "device"}
  {"op": "run", "name": N, "steps": S} -> {"wall_s", "cpu_s", "peak_memory_gib"}
  {"op": "drop", "name": N}            -> {}
  {"op": "quit"}
  Failures answer {"error": "..."}.
"""

import argparse
import json
import os
import sys
import time
import traceback

import torch
from torch import nn
import torch.nn.functional as F

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
               101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

# Defaults: ResNet-18, cifar stem, the paper's CIFAR heads.
DEFAULT_SPEC = {
    'depth': 18, 'width': 64, 'stage_sizes': (), 'stem': 'cifar',
    'cifar_stem_stride': 1, 'zero_init_residual': True, 'proj_layers': 2,
    'proj_hidden_dim': 2048, 'proj_dim': 2048, 'pred_hidden_dim': 512,
    'predictor': 'mlp', 'head_bn': 'default', 'image_size': 32, 'channels': 3,
    'batch_size': 128, 'dtype': 'float32', 'lr': 0.05, 'momentum': 0.9,
    'weight_decay': 1e-4,
}


def _conv(cin, cout, k, stride=1):
  return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


class _Block(nn.Module):
  """A residual block: `body(x)` plus the identity or a 1x1 conv + BN."""

  def __init__(self, cin, cout, stride, layers):
    super().__init__()
    self.body = nn.Sequential(*layers)  # ends with a BN
    self.downsample = (nn.Identity() if stride == 1 and cin == cout else
                       nn.Sequential(_conv(cin, cout, 1, stride),
                                     nn.BatchNorm2d(cout)))

  def forward(self, x):
    return F.relu(self.downsample(x) + self.body(x))


def basic_block(cin, filters, stride):
  return _Block(cin, filters, stride, [
      _conv(cin, filters, 3, stride), nn.BatchNorm2d(filters), nn.ReLU(True),
      _conv(filters, filters, 3), nn.BatchNorm2d(filters)])


def bottleneck_block(cin, filters, stride):
  return _Block(cin, filters * 4, stride, [
      _conv(cin, filters, 1), nn.BatchNorm2d(filters), nn.ReLU(True),
      _conv(filters, filters, 3, stride), nn.BatchNorm2d(filters),
      nn.ReLU(True), _conv(filters, filters * 4, 1),
      nn.BatchNorm2d(filters * 4)])


def resnet(spec) -> tuple[nn.Module, int]:
  """The backbone (images [B, C, H, W] -> [B, D]) and its feature width D."""
  depth, width = spec['depth'], spec['width']
  stages = tuple(spec['stage_sizes']) or STAGE_SIZES[depth]
  block, expansion = ((bottleneck_block, 4) if depth >= 50 else
                      (basic_block, 1))
  if spec['stem'] == 'imagenet':
    layers = [_conv(spec['channels'], width, 7, 2), nn.BatchNorm2d(width),
              nn.ReLU(True), nn.MaxPool2d(3, 2, 1)]
  elif spec['stem'] == 'cifar':
    layers = [_conv(spec['channels'], width, 3, spec['cifar_stem_stride']),
              nn.BatchNorm2d(width), nn.ReLU(True)]
  else:
    raise ValueError(f"stem must be 'imagenet' or 'cifar', got {spec['stem']!r}.")
  cin = width
  for i, n in enumerate(stages):
    for j in range(n):
      layers.append(block(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
      cin = width * 2**i * expansion
  net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
  for m in net.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
    elif isinstance(m, _Block) and spec['zero_init_residual']:
      nn.init.zeros_(m.body[-1].weight)
  return net, cin


def mlp(cin, widths, hidden_bn, output_bn):
  """heads.MLP: Linear (no bias before a BN), BN, ReLU between layers."""
  layers = []
  for i, w in enumerate(widths):
    last = i == len(widths) - 1
    use_bn = output_bn if last else hidden_bn
    layers.append(nn.Linear(cin, w, bias=not use_bn))
    if use_bn:
      layers.append(nn.BatchNorm1d(w, affine=not last))
    if not last:
      layers.append(nn.ReLU(True))
    cin = w
  return nn.Sequential(*layers)


def simsiam(spec) -> nn.ModuleDict:
  """Encoder (backbone + projector) and predictor of the spec's widths."""
  backbone, dim = resnet(spec)
  head_bn = spec['head_bn']
  projector = mlp(dim, (spec['proj_hidden_dim'],) * (spec['proj_layers'] - 1)
                  + (spec['proj_dim'],), head_bn != 'none',
                  head_bn in ('default', 'all'))
  if spec['predictor'] == 'none':
    predictor = nn.Identity()
  else:
    predictor = mlp(spec['proj_dim'], (spec['pred_hidden_dim'],
                                       spec['proj_dim']),
                    head_bn != 'none', head_bn == 'all')
    if spec['predictor'] == 'fixed_random':
      predictor.requires_grad_(False)
  return nn.ModuleDict({'encoder': nn.Sequential(backbone, projector),
                        'predictor': predictor})


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


class StepBench:
  """One candidate: model, optimiser, two resident views and the step."""

  def __init__(self, spec, compile_: bool):
    spec = {**DEFAULT_SPEC, **spec}
    self.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if self.device == 'cuda':  # XLA's default precision for float32 on GPUs
      torch.backends.cuda.matmul.allow_tf32 = True
      torch.backends.cudnn.allow_tf32 = True
      torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    self.model = simsiam(spec).to(self.device,
                                  memory_format=torch.channels_last)
    self.opt = torch.optim.SGD(
        [p for p in self.model.parameters() if p.requires_grad],
        lr=spec['lr'], momentum=spec['momentum'],
        weight_decay=spec['weight_decay'])
    self.amp = spec['dtype'] == 'bfloat16'
    self.step = torch.compile(self._step) if compile_ else self._step
    shape = (spec['batch_size'], spec['channels'], spec['image_size'],
             spec['image_size'])
    self.views = [torch.randn(shape, device=self.device).contiguous(
        memory_format=torch.channels_last) for _ in range(2)]
    self.framework = (f'pytorch {torch.__version__} '
                      f'{"compile" if compile_ else "eager"}, channels_last'
                      + (', autocast bf16' if self.amp else ''))

  def _step(self, x1, x2):
    with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.amp):
      z1, z2 = self.model['encoder'](x1), self.model['encoder'](x2)
      p1, p2 = self.model['predictor'](z1), self.model['predictor'](z2)
      loss = -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() +
                     F.cosine_similarity(p2, z1.detach()).mean())
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss

  def _sync(self):
    if self.device == 'cuda':
      torch.cuda.synchronize()

  def first_step(self) -> float:
    """Seconds of the first step (compilation included)."""
    t = time.perf_counter()
    self.step(*self.views).item()
    return time.perf_counter() - t

  def run(self, steps: int) -> dict:
    """Wall and process CPU seconds of `steps` steps, and the peak memory."""
    self._sync()
    if self.device == 'cuda':
      torch.cuda.reset_peak_memory_stats()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
      loss = self.step(*self.views)
    loss.item()
    self._sync()
    out = {'wall_s': time.perf_counter() - t, 'cpu_s': time.process_time() - c,
           'peak_memory_gib': None}
    if self.device == 'cuda':
      out['peak_memory_gib'] = torch.cuda.max_memory_allocated() / 2**30
    return out

  def describe(self) -> dict:
    return {'framework': self.framework, 'params': num_params(self.model),
            'device': ('cpu' if self.device == 'cpu'
                       else torch.cuda.get_device_name()),
            'threads': torch.get_num_threads()}


def _handle(benches: dict, msg: dict) -> dict:
  op = msg['op']
  if op == 'setup':
    bench = StepBench(msg['spec'], msg.get('compile', False))
    benches[msg['name']] = bench
    return {'first_step_s': bench.first_step(), **bench.describe()}
  if op == 'run':
    return benches[msg['name']].run(msg['steps'])
  if op == 'drop':
    benches.pop(msg['name'], None)
    if torch.cuda.is_available():
      torch.cuda.empty_cache()
    return {}
  raise ValueError(f'unknown op {op!r}')


def worker():
  """Answers JSON commands until 'quit' or end of input."""
  # The protocol owns the real stdout; everything else printed goes to stderr.
  proto = os.fdopen(os.dup(1), 'w', buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  proto.write(json.dumps({'torch': torch.__version__,
                          'cuda': torch.cuda.is_available()}) + '\n')
  benches = {}
  for line in sys.stdin:
    msg = json.loads(line)
    if msg['op'] == 'quit':
      break
    try:
      answer = _handle(benches, msg)
    except Exception:  # pylint: disable=broad-except
      answer = {'error': traceback.format_exc()[-2000:]}
    proto.write(json.dumps(answer) + '\n')


def main():
  p = argparse.ArgumentParser()
  for key, value in DEFAULT_SPEC.items():
    if isinstance(value, tuple):
      p.add_argument(f'--{key}', default='',
                     help='comma-separated ints; empty: the standard ones')
    elif isinstance(value, bool):
      p.add_argument(f'--{key}', default=value,
                     type=lambda s: s.lower() in ('1', 'true'))
    else:
      p.add_argument(f'--{key}', type=type(value), default=value)
  p.add_argument('--compile', action='store_true')
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--worker', action='store_true', help='serve stdin commands')
  args = p.parse_args()
  if args.worker:
    return worker()
  spec = {k: getattr(args, k) for k in DEFAULT_SPEC}
  spec['stage_sizes'] = tuple(int(s) for s in args.stage_sizes.split(',') if s)
  bench = StepBench(spec, args.compile)
  first = bench.first_step()
  if args.warmup:
    bench.run(args.warmup)
  timed = bench.run(args.steps)
  dt = timed['wall_s'] / args.steps
  print(json.dumps({
      **bench.describe(), **{k: spec[k] for k in ('depth', 'stem', 'image_size',
                                                  'batch_size', 'dtype')},
      'first_step_s': round(first, 1), 'step_ms': round(1000 * dt, 1),
      'images_per_sec': round(spec['batch_size'] / dt, 1),
      'cpu_per_wall': round(timed['cpu_s'] / timed['wall_s'], 2),
      'peak_memory_gib': timed['peak_memory_gib']}))


if __name__ == '__main__':
  main()
