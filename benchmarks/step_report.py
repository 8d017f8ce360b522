"""Markdown and JSON lines for the step comparison (benchmarks/step_compare.py)."""

import datetime
import json
import os
import shlex
import sys

import ml_collections


def json_line(row: dict) -> str:
  """`row` as one JSON line, floats rounded to 4 decimals."""
  def r(v):
    if isinstance(v, float):
      return round(v, 4)
    if isinstance(v, (tuple, list)):
      return [r(x) for x in v]
    return v
  return json.dumps({k: r(v) for k, v in row.items()}, default=str)


def host_description() -> str:
  """CPU model and core count of this machine, for the table's header."""
  model = ''
  try:
    with open('/proc/cpuinfo') as f:
      model = next((l.split(':', 1)[1].strip() for l in f
                    if l.startswith('model name')), '')
  except OSError:
    pass
  return f'{model or "unknown CPU"}, {os.cpu_count()} cores'


def header(title: str, rows: list[dict], notes=()) -> str:
  """Markdown title, device, date and the command line."""
  devices = sorted({r['device'] for r in rows if r.get('device')})
  lines = [f'## {title}', '',
           f'- date: {datetime.datetime.now().isoformat(timespec="seconds")}',
           f'- device: {"; ".join(devices) or "?"} (host: {host_description()})',
           f'- command: `{shlex.join([sys.executable, *sys.argv])}`']
  lines += [f'- {n}' for n in notes]
  return '\n'.join(lines) + '\n'


def _fmt(value, digits=1):
  if value is None or value == '':
    return ''
  if isinstance(value, float):
    return f'{value:,.{digits}f}'
  return str(value)


STEP_COLUMNS = ('benchmark | implementation | first step (s) | step ms (min / '
                'median) | images/s (median) | CPU s / wall s | GFLOP/image '
                '(XLA) | TFLOP/s | MFU | peak memory (GiB) | step time JAX / '
                'PyTorch (min / median)')


def table_head() -> str:
  cols = STEP_COLUMNS.split(' | ')
  return '| ' + ' | '.join(cols) + ' |\n|' + '---|' * len(cols) + '\n'


def table_rows(benchmark: str, rows: list[dict]) -> str:
  """Markdown rows under `table_head()`; `benchmark` names the config."""
  out = []
  for r in rows:
    impl = f"{r['candidate']}: {r['framework']}"
    if r.get('error') and 'step_ms_median' not in r:
      out.append(f'| {benchmark} | {impl} | failed: '
                 f"{r['error'].splitlines()[-1][:120]} |" + ' |' * 8)
      continue
    mem = r.get('peak_memory_gib', r.get('xla_step_memory_gib'))
    if mem is not None and 'peak_memory_gib' not in r:
      mem = f'{mem:.2f} (XLA)'
    ratios = '; '.join(f'vs {k[len("ratio_vs_"):]}: {v[0]:.2f} / {v[1]:.2f}'
                       for k, v in r.items() if k.startswith('ratio_vs_'))
    out.append('| ' + ' | '.join([
        benchmark, impl, _fmt(r.get('first_step_s')),
        f"{r['step_ms_min']:,.1f} / {r['step_ms_median']:,.1f}",
        _fmt(r['images_per_sec_median']), _fmt(r['cpu_per_wall_median'], 2),
        _fmt(r.get('xla_gflop_per_image'), 2), _fmt(r.get('tflops_median'), 3),
        _fmt(r.get('mfu_median'), 3),
        mem if isinstance(mem, str) else _fmt(mem, 2), ratios]) + ' |')
  return '\n'.join(out) + '\n'


def describe_config(config: ml_collections.ConfigDict) -> str:
  """'ResNet-18 w64 cifar stem, proj 2x2048, pred 512, 32 px, batch 128, float32'."""
  m = config.model
  stages = f" stages {tuple(m.stage_sizes)}" if m.stage_sizes else ''
  stem = (f'cifar stem /{m.cifar_stem_stride}' if m.stem == 'cifar' else
          'imagenet stem')
  return (f'ResNet-{m.depth} w{m.width}{stages} {stem}, proj {m.proj_layers}x'
          f'{m.proj_hidden_dim}->{m.proj_dim}, pred {m.pred_hidden_dim}, '
          f'{config.data.image_size} px, batch {config.batch_size}, '
          f'{m.dtype}')
