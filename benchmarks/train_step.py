"""Our SimSiam train step vs PyTorch's same step, interleaved in one command.

Candidates, timed in rounds A B C A B C ... (see benchmarks/step_compare.py):
the real sharded train step of the config (`train.make_train_step`, on
synthetic batches, no input pipeline), once per `--jax_variants` entry; the
same network in PyTorch, eager with channels_last (autocast for bf16), and
with `--torch_compile` also torch.compile, in one long-lived worker process
(`--torch_python`, which may be another virtual environment). The PyTorch
network is built from the config's own widths (depth, width, stage_sizes,
stem, cifar_stem_stride, projector and predictor widths).

Per candidate: first step (compilation), min and median step time over the
rounds, images/s, process CPU seconds per wall second, XLA's FLOPs per image
(the same network's count is used for the PyTorch rows), TFLOP/s, MFU
against `--peak_tflops` (default: from the device kind, H100/H200), peak
memory (PyTorch: allocated; JAX: XLA's buffers of the step), and per JAX
variant the per-round step-time ratio JAX / PyTorch (min and median).
Markdown table on stdout (appended to `--output` if given), JSON lines too.

  PYTHONPATH=. .venv/bin/python benchmarks/train_step.py --config=configs/cifar10.py \\
      --config.batch_size=128 --rounds=5 --steps=3 [--torch_compile] \\
      [--jax_variants=model.conv_impl=xla,model.conv_impl=auto] \\
      [--torch_python=.venv-torch/bin/python] [--output=cpu_steps.md]

A variant is '+'-joined FIELD=VALUE overrides of the config
('model.conv_impl=xla+model.dtype=bfloat16'); values take the field's type.
"""

import os
import sys

# JAX must not take 75 % of the GPU up front: the PyTorch worker shares it.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import step_compare  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import step_report  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file('config', 'configs/cifar10.py', 'Config file.')
flags.DEFINE_integer('rounds', 5, 'Interleaved rounds.')
flags.DEFINE_integer('steps', 3, 'Timed steps per candidate per round.')
flags.DEFINE_integer('warmup', 1, 'Untimed steps after the first one.')
flags.DEFINE_string('jax_variants', '', 'Comma-separated config overrides, '
                    "one JAX candidate each ('a.b=v+c.d=w'; commas inside "
                    'brackets stay); empty: the config as it is.')
flags.DEFINE_string('torch_python', 'auto', "Interpreter with torch: 'auto' "
                    "(this one, if it has torch), a path, or 'none'.")
flags.DEFINE_bool('torch_compile', False, 'Add a torch.compile candidate.')
flags.DEFINE_float('peak_tflops', 0.0, 'Peak dense TFLOP/s of one device for '
                   'MFU; 0: from the device kind (H100 SXM: bf16 989, TF32 '
                   '495), none on a CPU.')
flags.DEFINE_string('output', '', 'Also append the Markdown table here.')
FLAGS = flags.FLAGS


def resolve_torch_python(value: str) -> str:
  if value == 'auto':
    try:
      import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel,unused-import
      return sys.executable
    except ImportError:
      return ''
  return '' if value in ('', 'none') else value


def main(argv):
  del argv
  config = FLAGS.config
  variants = step_compare.split_top_level(FLAGS.jax_variants) or ['']
  for v in variants:  # fail on a misspelt override before compiling anything
    step_compare.with_overrides(config, v)
  rows = step_compare.compare(
      config, jax_variants=variants,
      torch_python=resolve_torch_python(FLAGS.torch_python),
      torch_compile=FLAGS.torch_compile, rounds=FLAGS.rounds,
      steps=FLAGS.steps, warmup=FLAGS.warmup,
      peak=FLAGS.peak_tflops or None,
      log=lambda s: print(s, file=sys.stderr, flush=True))
  name = os.path.splitext(os.path.basename(
      config_flags.get_config_filename(FLAGS['config'])))[0]
  bench = (f'{name} {config.data.image_size} px, batch {config.batch_size}, '
           f'{config.model.dtype}')
  for row in rows:
    print(step_report.json_line({'benchmark': bench, **row}), flush=True)
  notes = [f'{FLAGS.rounds} rounds x {FLAGS.steps} steps after '
           f'{FLAGS.warmup} warm-up step(s); PyTorch rows use XLA\'s FLOP '
           'count of the same network']
  table = (step_report.header(step_report.describe_config(config), rows,
                               notes) + '\n' + step_report.table_head() +
           step_report.table_rows(bench, rows))
  print(table)
  if FLAGS.output:
    with open(FLAGS.output, 'a') as f:
      f.write(table + '\n')


if __name__ == '__main__':
  app.run(main)
