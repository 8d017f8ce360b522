"""Where the train step's time goes on XLA:CPU, op by op, from a profile.

Runs the config's real train step (`step_compare.JaxCandidate`: synthetic
batches, no input pipeline) under `jax.profiler`, reads the per-thunk
durations from the Perfetto trace and groups them by kind of HLO op:

  transpose    loop fusions whose root is a transpose (layout changes)
  ynnpack      YNNPACK fusions (convolutions, dots, fused element-wise)
  eigen conv   convolutions run by Eigen
  dot          matrix products outside YNNPACK
  other        element-wise / reduction loop fusions and the rest

and lists the slowest ops with what consumes them (a transpose that feeds a
convolution whose metadata says `transpose(jvp(...))/.../conv` is the layout
change of that convolution's weight gradient).

  PYTHONPATH=. .venv/bin/python benchmarks/step_profile.py \\
      --config=configs/fashion_mnist.py [--steps=3] [--top=12] \\
      [--variant=model.conv_impl=xla+batch_size=128]

What it showed (BENCHMARKS.md, "Where the demo step's time goes"): 38 % of
the demo step's op time is transposes that put the batch dimension last
([N, H, W, C] -> [C, H, W, N]) for the weight-gradient convolutions, each
recomputing the BN/ReLU chain it reads, emitted as plain loops; with the
weight-gradient convolutions they read, about half the step.
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from benchmarks import step_compare

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags (not at import: 'config' would clash with other tools')."""
  config_flags.DEFINE_config_file('config', 'configs/fashion_mnist.py',
                                  'Config file.')
  flags.DEFINE_string('variant', '', "'+'-joined FIELD=VALUE overrides.")
  flags.DEFINE_integer('steps', 3, 'Profiled steps (after 2 untimed ones).')
  flags.DEFINE_integer('top', 12, 'Slowest ops to list.')

_INSTR = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = (\S+) (\w[\w-]*)\((.*)$')
_OPERAND = re.compile(r'%([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r'calls=%([\w.\-]+)')


def parse_entry(hlo_text: str) -> dict:
  """{instruction: (shape, opcode, operands, op_name, called computation)} of ENTRY."""
  out, in_entry = {}, False
  for line in hlo_text.split('\n'):
    if line.startswith('ENTRY '):
      in_entry = True
      continue
    if in_entry and line.startswith('}'):
      break
    m = _INSTR.match(line) if in_entry else None
    if m:
      name, shape, opcode, rest = m.groups()
      args = rest.split(')', 1)[0]
      op_name = _OP_NAME.search(rest)
      calls = _CALLS.search(rest)
      out[name] = (shape, opcode, _OPERAND.findall(args),
                   op_name.group(1) if op_name else '',
                   calls.group(1) if calls else '')
  return out


def kind_of(name: str, instr) -> str:
  """The group of one profiled op (see the module docstring)."""
  if name.startswith('ynn_fusion') or (
      instr and '__ynn_fusion' in instr[4]):
    return 'ynnpack'
  if name.startswith('transpose') or '_transpose' in name:
    return 'transpose'
  if instr and instr[1] == 'convolution':
    return 'eigen conv'
  if name.startswith('dot') or (instr and instr[1] == 'dot'):
    return 'dot'
  return 'other'


def op_durations(trace_dir: str, steps: int) -> dict:
  """{op name: microseconds per step} of the newest Perfetto trace."""
  path = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'),
                          recursive=True))[-1]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  total = collections.Counter()
  for e in events:
    name = e.get('name', '')
    if e.get('ph') == 'X' and not name.startswith(('$', 'Thunk', 'Pjit')):
      total[name] += e.get('dur', 0)
  return {k: v / steps for k, v in total.items()}


def consumers(entry: dict, name: str) -> list[str]:
  """Op names (metadata) of the instructions that read `name`."""
  return [v[3] for v in entry.values() if name in v[2]]


def main(argv):
  del argv
  config = step_compare.with_overrides(FLAGS.config, FLAGS.variant)
  cand = step_compare.JaxCandidate(FLAGS.variant or 'config', config)
  cand.setup()
  cand.run(2)
  entry = parse_entry(cand.step.as_text())
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    wall = cand.run(FLAGS.steps)['wall_s'] / FLAGS.steps
    jax.profiler.stop_trace()
    per_op = op_durations(tmp, FLAGS.steps)
  groups = collections.Counter()
  for name, us in per_op.items():
    groups[kind_of(name, entry.get(name))] += us
  busy = sum(groups.values())
  print(f'step {1000 * wall:.1f} ms wall; ops {busy / 1000:.1f} ms summed '
        '(ops of both cores; more than the wall time where they overlap)')
  print('\n| kind | ms / step | share of op time |\n|---|---|---|')
  for kind, us in groups.most_common():
    print(f'| {kind} | {us / 1000:.1f} | {100 * us / busy:.0f} % |')
  print(f'\n| op | kind | ms / step | shape | read by |\n|---|---|---|---|---|')
  for name, us in sorted(per_op.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
    instr = entry.get(name)
    shape = instr[0] if instr else ''
    users = sorted({re.sub(r'^jit\(train_step\)/', '', u)
                    for u in consumers(entry, name) if u})[:2]
    print(f'| {name} | {kind_of(name, instr)} | {us / 1000:.1f} | {shape} | '
          f'{"; ".join(users)} |')
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  app.run(main)
