"""The same SimSiam train step in PyTorch (the official code's model), for comparison.

torchvision ResNet (zero-init residual; cifar variant: 3x3 stem, no max-pool),
the official projector / predictor, symmetric negative cosine with detached
targets, SGD momentum 0.9 and weight decay; channels_last, autocast in
bf16 when asked, and optionally torch.compile. Synthetic batches, no data
loading. Prints one JSON line.

  .venv-torch/bin/python benchmarks/torch_simsiam_step.py --depth=18 --stem=cifar \\
      --image_size=32 --batch_size=128 --dtype=float32 [--compile]
"""

import argparse
import json
import time

import torch
from torch import nn
import torchvision


def simsiam(depth: int, stem: str, proj_layers: int, dim=2048, pred_dim=512):
  encoder = getattr(torchvision.models, f'resnet{depth}')(
      zero_init_residual=True)
  if stem == 'cifar':
    encoder.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    encoder.maxpool = nn.Identity()
  prev = encoder.fc.in_features
  layers = []
  for _ in range(proj_layers - 1):
    layers += [nn.Linear(prev, prev, bias=False), nn.BatchNorm1d(prev),
               nn.ReLU(inplace=True)]
  layers += [nn.Linear(prev, dim), nn.BatchNorm1d(dim, affine=False)]
  encoder.fc = nn.Sequential(*layers)
  encoder.fc[-2].bias.requires_grad = False  # followed by BN, as upstream
  predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False),
                            nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),
                            nn.Linear(pred_dim, dim))
  return nn.ModuleDict({'encoder': encoder, 'predictor': predictor})


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--depth', type=int, default=18)
  p.add_argument('--stem', default='cifar')
  p.add_argument('--proj_layers', type=int, default=2)
  p.add_argument('--image_size', type=int, default=32)
  p.add_argument('--batch_size', type=int, default=128)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--compile', action='store_true')
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  args = p.parse_args()
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  model = simsiam(args.depth, args.stem, args.proj_layers).to(device)
  model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                        weight_decay=1e-4)
  cos = nn.CosineSimilarity(dim=1)
  amp = args.dtype == 'bfloat16'

  def step(x1, x2):
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
      z1, z2 = model['encoder'](x1), model['encoder'](x2)
      p1, p2 = model['predictor'](z1), model['predictor'](z2)
      loss = -0.5 * (cos(p1, z2.detach()).mean() + cos(p2, z1.detach()).mean())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  if args.compile:
    step = torch.compile(step)
  shape = (args.batch_size, 3, args.image_size, args.image_size)
  x1, x2 = (torch.randn(shape, device=device).contiguous(
      memory_format=torch.channels_last) for _ in range(2))
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  t = time.perf_counter()
  step(x1, x2).item()
  first = time.perf_counter() - t
  for _ in range(args.warmup):
    step(x1, x2)
  sync()
  t = time.perf_counter()
  for _ in range(args.steps):
    loss = step(x1, x2)
  loss.item()
  sync()
  dt = (time.perf_counter() - t) / args.steps
  peak = (torch.cuda.max_memory_allocated() / 2**30 if device == 'cuda'
          else None)
  print(json.dumps({
      'framework': f'pytorch {torch.__version__}' + (' compile' if args.compile
                                                      else ' eager'),
      'device': device if device == 'cpu' else torch.cuda.get_device_name(),
      'depth': args.depth, 'stem': args.stem, 'image_size': args.image_size,
      'batch_size': args.batch_size, 'dtype': args.dtype,
      'first_step_s': round(first, 1), 'step_ms': round(1000 * dt, 1),
      'images_per_sec': round(args.batch_size / dt, 1),
      'peak_memory_gib': round(peak, 2) if peak is not None else None}))


if __name__ == '__main__':
  main()
