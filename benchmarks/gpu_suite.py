"""The accelerator benchmark suite: one command, one Markdown table.

On one machine, for each entry: our real train step vs the same network in
PyTorch (eager with AMP bf16 autocast where the dtype is bfloat16, and
channels_last; torch.compile unless `--no-torch_compile`), interleaved in
rounds (benchmarks/step_compare.py), with images/s, step time, MFU from
XLA's FLOP count, peak memory and the JAX / PyTorch step-time ratio; then
the augmentation throughput on the device (JAX, in jit) and on the host
(tf.data; skipped with a note where TensorFlow is absent).

Entries: resnet50_bf16, resnet50_fp32 (configs/imagenet.py, 224 px),
resnet18_cifar_bf16, resnet18_cifar_fp32 (configs/cifar10.py, 32 px),
augment. MFU peaks: one H100 SXM / H200, dense: bf16 989.4 TFLOP/s; float32
rows against TF32 494.7 (XLA computes float32 convolutions and matrix
products in TF32 by default on these GPUs, and the PyTorch worker allows
TF32 to match; plain float32 without tensor cores would be 67).

Run it through benchmarks/gpu_suite.sh (installs carried wheels first);
`--quick` shrinks every network and batch so the whole suite runs on a CPU
in about a minute (what tests/test_benchmarks.py does):

  PYTHONPATH=. .venv/bin/python benchmarks/gpu_suite.py --quick --output=/tmp/suite.md
"""

import argparse
import importlib
import importlib.util
import os
import sys

# JAX must not take 75 % of the GPU up front: the PyTorch worker shares it.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

STEP_ENTRIES = {  # name: (config module, compute dtype)
    'resnet50_bf16': ('imagenet', 'bfloat16'),
    'resnet50_fp32': ('imagenet', 'float32'),
    'resnet18_cifar_bf16': ('cifar10', 'bfloat16'),
    'resnet18_cifar_fp32': ('cifar10', 'float32'),
}
ALL_ENTRIES = (*STEP_ENTRIES, 'augment')
# --quick: the same code paths with tiny networks and batches.
QUICK_MODEL = {'width': 8, 'stage_sizes': (1, 1, 1, 1), 'proj_hidden_dim': 64,
               'proj_dim': 64, 'pred_hidden_dim': 16}
QUICK_IMAGE = {'imagenet': 32, 'cifar10': 16}
QUICK_AUG = {'cifar': (32, 32, 0.0, 16), 'imagenet': (64, 56, 0.5, 4)}
REQUIRED = ('jax', 'flax', 'optax', 'orbax.checkpoint', 'etils.epath',
            'absl', 'ml_collections', 'dm_pix', 'numpy')


def check_imports():
  """Exits with one message naming every missing module."""
  missing = [m for m in REQUIRED if importlib.util.find_spec(m.split('.')[0])
             is None]
  if missing:
    hint = ''
    if {'ml_collections', 'dm_pix'} & set(missing):
      hint = (' ml_collections and dm_pix are pure-Python wheels: run `bash '
              'benchmarks/gpu_suite.sh download` where pip reaches PyPI and '
              'start the suite through benchmarks/gpu_suite.sh.')
    sys.exit(f'missing Python modules: {", ".join(missing)}.{hint}')


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true',
                 help='tiny networks and batches (CPU smoke run)')
  p.add_argument('--entries', default=','.join(ALL_ENTRIES),
                 help=f'comma-separated subset of {",".join(ALL_ENTRIES)}')
  p.add_argument('--resnet50_batch', type=int, default=128)
  p.add_argument('--resnet18_batch', type=int, default=512)
  p.add_argument('--rounds', type=int, default=None, help='default 5 (quick 2)')
  p.add_argument('--steps', type=int, default=None,
                 help='steps per round; default 10 (quick 1)')
  p.add_argument('--warmup', type=int, default=None, help='default 3 (quick 0)')
  p.add_argument('--torch_python', default=sys.executable,
                 help="interpreter with torch; 'none': JAX rows only")
  p.add_argument('--torch_compile', action=argparse.BooleanOptionalAction,
                 default=None, help='torch.compile rows (default: on, off '
                 'with --quick)')
  p.add_argument('--host_aug', action=argparse.BooleanOptionalAction,
                 default=True, help='time tf.data augmentation if TF is there')
  p.add_argument('--output', default='gpu_suite.md',
                 help='Markdown file written (JSON lines beside it, .jsonl)')
  args = p.parse_args(argv)
  quick = args.quick
  args.rounds = args.rounds or (2 if quick else 5)
  args.steps = args.steps or (1 if quick else 10)
  args.warmup = args.warmup if args.warmup is not None else (0 if quick else 3)
  if args.torch_compile is None:
    args.torch_compile = not quick
  if args.torch_python == 'none':
    args.torch_python = ''
  args.entries = [e for e in args.entries.split(',') if e]
  unknown = set(args.entries) - set(ALL_ENTRIES)
  if unknown:
    p.error(f'unknown entries {sorted(unknown)}; choose from {ALL_ENTRIES}')
  return args


def entry_config(name: str, args):
  """The config of a step entry: the experiment's, batch and dtype set."""
  module, dtype = STEP_ENTRIES[name]
  config = importlib.import_module(f'configs.{module}').get_config()
  config.model.dtype = dtype
  config.batch_size = (args.resnet50_batch if module == 'imagenet' else
                       args.resnet18_batch)
  if args.quick:
    config.model.update(QUICK_MODEL)
    config.data.image_size = QUICK_IMAGE[module]
    config.batch_size = 8
  return config


def step_rows(name, args, log):
  """Summary rows of one step entry (imports JAX and the model only now)."""
  from benchmarks import step_compare  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from benchmarks import step_report  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  config = entry_config(name, args)
  rows = step_compare.compare(
      config, torch_python=args.torch_python,
      torch_compile=args.torch_compile, rounds=args.rounds, steps=args.steps,
      warmup=args.warmup, log=log)
  bench = f'{name}: {step_report.describe_config(config)}'
  return [{'benchmark': bench, **r} for r in rows]


def augment_rows(args, log):
  """Device (JAX) and host (tf.data) augmentation rows, images/s."""
  import jax  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from benchmarks import augment_throughput  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  has_tf = importlib.util.find_spec('tensorflow') is not None
  recipes = QUICK_AUG if args.quick else augment_throughput.RECIPES
  steps = 2 if args.quick else 4
  rows = []
  for recipe, (src, out, blur, batch) in recipes.items():
    bench = (f'augment {recipe}: {src} px -> {out} px, one view, batch '
             f'{batch}' + (', blur' if blur else ''))
    rate = augment_throughput.device_rate(src, out, blur, batch, steps)
    log(f'{bench}: device {rate:.1f} images/s')
    rows.append({'benchmark': bench, 'candidate': 'device',
                 'framework': f'JAX jit on {jax.devices()[0].platform}',
                 'images_per_sec_median': rate})
    host = {'benchmark': bench, 'candidate': 'host',
            'framework': 'tf.data, AUTOTUNE, all host cores'}
    if not has_tf:
      host['skipped'] = 'TensorFlow is not installed here'
    elif not args.host_aug:
      host['skipped'] = '--no-host_aug'
    else:
      host['images_per_sec_median'] = augment_throughput.host_rate(
          src, out, blur, batch, steps)
      log(f'{bench}: host {host["images_per_sec_median"]:.1f} images/s')
    rows.append(host)
  return rows


def augment_table_rows(rows) -> str:
  out = []
  for r in rows:
    rate = (f"{r['images_per_sec_median']:,.1f}"
            if 'images_per_sec_median' in r else f"skipped: {r['skipped']}")
    out.append(f"| {r['benchmark']} | {r['candidate']}: {r['framework']} "
               f'| | | {rate} |' + ' |' * 6)
  return '\n'.join(out) + '\n'


def main(argv=None):
  args = parse_args(argv)
  check_imports()
  from benchmarks import step_report  # pylint: disable=g-import-not-at-top,import-outside-toplevel

  def log(s):
    print(s, file=sys.stderr, flush=True)

  rows, table = [], ''
  for name in args.entries:
    if name in STEP_ENTRIES:
      entry = step_rows(name, args, log)
      table += step_report.table_rows(entry[0]['benchmark'], entry)
      rows += entry
  if 'augment' in args.entries:
    entry = augment_rows(args, log)
    table += augment_table_rows(entry)
    rows += entry
  notes = [
      f'{args.rounds} rounds x {args.steps} steps per candidate after '
      f'{args.warmup} warm-up step(s), candidates interleaved'
      + (' (--quick: tiny networks, batch 8)' if args.quick else ''),
      'MFU: bf16 rows against 989.4 TFLOP/s, float32 rows against TF32 494.7 '
      '(H100 SXM / H200, dense; XLA and the PyTorch worker use TF32 for '
      'float32); none on a CPU',
      "PyTorch rows: MFU and TFLOP/s from XLA's FLOP count of the same network; "
      'peak memory = torch.cuda.max_memory_allocated; JAX: XLA\'s buffers of '
      'the compiled step, marked (XLA)',
      'augmentation: images/s in the images/s column, one augmented view per '
      'image from uint8 in memory']
  text = (step_report.header('SimSiam benchmark suite', rows, notes) + '\n' +
          step_report.table_head() + table)
  print(text)
  with open(args.output, 'w') as f:
    f.write(text)
  with open(os.path.splitext(args.output)[0] + '.jsonl', 'w') as f:
    for r in rows:
      f.write(step_report.json_line(r) + '\n')
  return rows


if __name__ == '__main__':
  main()
