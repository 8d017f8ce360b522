"""Our SimSiam train step and PyTorch's, timed in interleaved rounds.

Candidates: one or more JAX variants of a config (the real
`train.make_train_step`, in this process) and the same network in PyTorch
(benchmarks/torch_simsiam_step.py) in a long-lived worker process, which may
be another interpreter. Every candidate is compiled and warmed up first; then
each round runs `steps` steps of every candidate in turn (A B C A B C ...),
so slow drifts of a shared machine hit all of them alike. Per candidate:
min and median over rounds of the step time, images/s, process CPU seconds
per wall second (2 on two busy cores), and per JAX variant the per-round
step-time ratio to each PyTorch candidate (above 1: JAX slower).

Used by benchmarks/train_step.py (one config) and benchmarks/gpu_suite.py;
the tables are made by benchmarks/step_report.py.
"""

import ast
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np

from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import state as state_lib
from simsiam_jax import train
from simsiam_jax.models import simsiam

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'torch_simsiam_step.py')
_MODEL_KEYS = ('depth', 'width', 'stage_sizes', 'stem', 'cifar_stem_stride',
               'zero_init_residual', 'proj_layers', 'proj_hidden_dim',
               'proj_dim', 'pred_hidden_dim', 'predictor', 'head_bn')

# Dense peak TFLOP/s by device kind: (bf16, float32 as TF32 tensor-core math,
# which XLA uses for float32 convolutions and matrix products by default on
# these GPUs; plain float32 without tensor cores is 67 on the H100 SXM).
PEAK_TFLOPS = (('H100 PCIe', 756.0, 378.0), ('H100', 989.4, 494.7),
               ('H200', 989.4, 494.7))


def peak_tflops(device_kind: str, dtype: str):
  """(peak TFLOP/s, label) of one device for the step's dtype; (None, '') if unknown."""
  for name, bf16, tf32 in PEAK_TFLOPS:
    if name in device_kind:
      if dtype == 'bfloat16':
        return bf16, f'{name} bf16 dense {bf16:g}'
      return tf32, f'{name} TF32 dense {tf32:g}'
  return None, ''


def torch_spec(config: ml_collections.ConfigDict) -> dict:
  """Every width and setting PyTorch needs to build the config's network."""
  spec = {k: config.model[k] for k in _MODEL_KEYS}
  spec['stage_sizes'] = list(spec['stage_sizes'])
  spec.update(image_size=config.data.image_size, channels=config.data.channels,
              batch_size=config.batch_size, dtype=config.model.dtype,
              lr=optim.scaled_lr(config.optim.base_lr, config.batch_size),
              momentum=config.optim.momentum,
              weight_decay=config.optim.weight_decay)
  return spec


def split_top_level(text: str, sep: str = ',') -> list[str]:
  """Splits on `sep` outside brackets: 'a=(1,2),b=3' -> ['a=(1,2)', 'b=3']."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    depth += ch in '([{'
    depth -= ch in ')]}'
    if ch == sep and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return [p.strip() for p in parts if p.strip()]


def with_overrides(config: ml_collections.ConfigDict, overrides: str):
  """A copy of `config` with 'a.b=v+c.d=w' applied, each value parsed as the field's type.

  Raises:
    ValueError: an unknown field or a value of the wrong type, before
      anything is compiled.
  """
  config = config.copy_and_resolve_references()
  for item in split_top_level(overrides, '+'):
    path, sep, text = item.partition('=')
    if not sep:
      raise ValueError(f'override {item!r} is not FIELD=VALUE.')
    *parents, leaf = path.strip().split('.')
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise ValueError(f'override {item!r}: config has no field {path!r}.')
    old = node[leaf]
    if isinstance(old, bool):
      value = text.lower() in ('1', 'true', 'yes')
    elif isinstance(old, (tuple, list)):
      value = tuple(ast.literal_eval(text))
    else:
      value = type(old)(text)
    node[leaf] = value
  return config


class JaxCandidate:
  """The real sharded train step of a config, in this process."""

  def __init__(self, name: str, config: ml_collections.ConfigDict):
    self.name, self.config = name, config
    self.framework = f'simsiam_jax (jax {jax.__version__})'

  def setup(self) -> dict:
    """Builds, compiles (ahead of time) and runs the first step."""
    config = self.config
    mesh = parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    model = simsiam.create_model(config.model)
    tx, schedule = optim.create_optimizer(config, 100, 10_000)
    size = config.data.image_size
    shape = (size, size, config.data.channels)
    t = time.perf_counter()
    self.state = state_lib.create(
        state_lib.simsiam_initializer(model, tx, shape), mesh, jax.random.key(0))
    params = sum(x.size for x in jax.tree.leaves(self.state.params))
    rng = np.random.default_rng(0)
    local = config.batch_size // jax.process_count()
    self.batches = [parallel.host_to_global(
        {v: rng.standard_normal((local, *shape), np.float32)
         for v in ('view1', 'view2')}, mesh) for _ in range(2)]
    step = train.make_train_step(config, mesh, schedule)
    # The compiled executable is what runs, so the step compiles once.
    self.step = step.lower(self.state, self.batches[0]).compile()
    cost = self.step.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get('flops', 0.0)) if cost else 0.0
    # On one device XLA counts the whole step; sharded, each device's part.
    self.step_flops = flops * mesh.devices.size
    self.state, metrics = self.step(self.state, self.batches[0])
    jax.block_until_ready(metrics)
    info = {'first_step_s': time.perf_counter() - t, 'params': params,
            'framework': self.framework,
            'device': f'{jax.device_count()}x {jax.devices()[0].device_kind}'}
    mem = self.step.memory_analysis()
    if mem is not None:  # what XLA allocates for one step, all live buffers
      info['xla_step_memory_gib'] = (
          mem.argument_size_in_bytes + mem.output_size_in_bytes +
          mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2**30
    return info

  def run(self, steps: int) -> dict:
    t, c = time.perf_counter(), time.process_time()
    for i in range(steps):
      self.state, metrics = self.step(self.state, self.batches[i % 2])
    jax.block_until_ready((self.state, metrics))
    out = {'wall_s': time.perf_counter() - t, 'cpu_s': time.process_time() - c}
    stats = jax.devices()[0].memory_stats() or {}
    if 'peak_bytes_in_use' in stats:  # process-wide: earlier candidates too
      out['process_peak_memory_gib'] = stats['peak_bytes_in_use'] / 2**30
    return out

  def close(self):
    self.state = self.batches = self.step = None


class TorchWorkerError(RuntimeError):
  """The PyTorch worker answered an error or died."""


class TorchWorker:
  """A PyTorch interpreter serving benchmarks/torch_simsiam_step.py --worker."""

  def __init__(self, python: str = sys.executable):
    self.proc = subprocess.Popen(
        [python, TORCH_SCRIPT, '--worker'], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, bufsize=1)
    self.hello = self._read()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise TorchWorkerError(f'PyTorch worker exited (code '
                             f'{self.proc.poll()}); its stderr is above.')
    answer = json.loads(line)
    if 'error' in answer:
      raise TorchWorkerError(answer['error'])
    return answer

  def call(self, **msg) -> dict:
    self.proc.stdin.write(json.dumps(msg) + '\n')
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write('{"op": "quit"}\n')
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()
        self.proc.wait()


class TorchCandidate:
  """One PyTorch variant (eager or compiled) living in a TorchWorker."""

  def __init__(self, name: str, worker: TorchWorker | None, spec: dict,
               compile_: bool, worker_error: str = ''):
    self.name, self.worker, self.spec, self.compile = (name, worker, spec,
                                                       compile_)
    self.worker_error = worker_error  # the worker could not start
    self.framework = (f"pytorch {worker.hello['torch']}" if worker else
                      'pytorch')

  def setup(self) -> dict:
    if self.worker is None:
      raise TorchWorkerError(self.worker_error)
    info = self.worker.call(op='setup', name=self.name, spec=self.spec,
                            compile=self.compile)
    self.framework = info['framework']
    return info

  def run(self, steps: int) -> dict:
    return self.worker.call(op='run', name=self.name, steps=steps)

  def close(self):
    if self.worker is None:
      return
    try:
      self.worker.call(op='drop', name=self.name)
    except (TorchWorkerError, OSError, ValueError):
      pass


def interleave(candidates, rounds: int, steps: int, warmup: int,
               log=print) -> dict:
  """Sets every candidate up, then runs `rounds` rounds of `steps` steps each in turn.

  Returns:
    {name: {'info': setup answer, 'rounds': [per-round dicts], 'error': str}};
    a candidate that fails is dropped from later rounds, the others go on.
  """
  results = {c.name: {'info': {}, 'rounds': [], 'error': ''}
             for c in candidates}
  alive = []
  for c in candidates:
    try:
      results[c.name]['info'] = c.setup()
      if warmup:
        c.run(warmup)
      alive.append(c)
      first = results[c.name]['info']['first_step_s']
      log(f'{c.name}: first step {first:.1f} s')
    except Exception as e:  # pylint: disable=broad-except
      results[c.name]['error'] = f'{type(e).__name__}: {str(e)[-300:]}'
      log(f'{c.name}: setup failed: {results[c.name]["error"]}')
  for r in range(rounds):
    for c in list(alive):
      try:
        out = c.run(steps)
      except Exception as e:  # pylint: disable=broad-except
        results[c.name]['error'] = (f'round {r}: {type(e).__name__}: '
                                    f'{str(e)[-300:]}')
        alive.remove(c)
        continue
      out['step_s'] = out['wall_s'] / steps
      results[c.name]['rounds'].append(out)
      log(f'round {r} {c.name}: {1000 * out["step_s"]:.1f} ms/step, '
          f'cpu/wall {out["cpu_s"] / out["wall_s"]:.2f}')
  return results


def summarise(candidates, results: dict, batch_size: int, step_flops: float,
              peaks: dict) -> list[dict]:
  """One row per candidate: min/median step time, images/s, ratios, FLOP rates.

  `batch_size` and `step_flops` are the base config's; a JAX candidate that
  overrides the batch or the network has its own (`config.batch_size`,
  `step_flops`), so its images/s and FLOP rates are its own. `peaks` maps a
  candidate's name to the peak TFLOP/s of all devices for its dtype (None:
  no MFU).
  """
  jax_names = [c.name for c in candidates if isinstance(c, JaxCandidate)]
  torch_names = [c.name for c in candidates if isinstance(c, TorchCandidate)]
  rows = []
  for c in candidates:
    res = results[c.name]
    row = {'candidate': c.name, 'framework': c.framework, 'error': res['error'],
           **{k: v for k, v in res['info'].items() if k != 'framework'}}
    steps = [r['step_s'] for r in res['rounds']]
    own_config = getattr(c, 'config', None)
    batch = own_config.batch_size if own_config is not None else batch_size
    flops = getattr(c, 'step_flops', 0.0) or step_flops
    if batch != batch_size:
      row['batch_size'] = batch
    if steps:
      med = statistics.median(steps)
      row.update(
          rounds=len(steps), step_ms_min=1000 * min(steps),
          step_ms_median=1000 * med, images_per_sec_median=batch / med,
          images_per_sec_max=batch / min(steps),
          cpu_per_wall_median=statistics.median(
              r['cpu_s'] / r['wall_s'] for r in res['rounds']))
      for key in ('peak_memory_gib', 'process_peak_memory_gib'):
        mems = [r[key] for r in res['rounds'] if r.get(key) is not None]
        if mems:
          row[key] = max(mems)
      if flops:
        row['xla_gflop_per_image'] = flops / batch / 1e9
        row['tflops_median'] = flops / med / 1e12
        if peaks.get(c.name):
          row['mfu_median'] = row['tflops_median'] / peaks[c.name]
    if c.name in jax_names:
      for t in torch_names:
        ratios = [a['step_s'] / b['step_s'] for a, b in
                  zip(res['rounds'], results[t]['rounds'])]
        if ratios:
          row[f'ratio_vs_{t}'] = (min(ratios), statistics.median(ratios))
    rows.append(row)
  return rows


def compare(config: ml_collections.ConfigDict, *, jax_variants=('',),
            torch_python: str = sys.executable, torch_compile: bool = False,
            rounds: int = 5, steps: int = 3, warmup: int = 1,
            peak: float | None = None, log=print) -> list[dict]:
  """Runs the interleaved comparison for one config; returns the summary rows.

  Args:
    config: the base config (its model widths also build the PyTorch net).
    jax_variants: override strings ('model.conv_impl=xla+model.dtype=...');
      '' is the config as it is.
    torch_python: interpreter with torch; '' for no PyTorch candidates.
    torch_compile: add a torch.compile candidate.
    rounds, steps, warmup: rounds, steps per round, untimed steps after the first.
    peak: peak TFLOP/s of one device for the MFU column; None: from the
      device kind and each candidate's dtype.
  """
  configs = [(v or 'jax', with_overrides(config, v)) for v in jax_variants]
  candidates = [JaxCandidate(name, c) for name, c in configs]
  worker, error = None, ''
  if torch_python:
    try:
      worker = TorchWorker(torch_python)
    except (OSError, TorchWorkerError, ValueError) as e:
      error = f'PyTorch worker ({torch_python}) did not start: {e}'
      log(error)
  try:
    if torch_python:
      spec = torch_spec(config)
      candidates.append(TorchCandidate('torch_eager', worker, spec, False,
                                       error))
      if torch_compile:
        candidates.append(TorchCandidate('torch_compile', worker, spec, True,
                                         error))
    results = interleave(candidates, rounds, steps, warmup, log)
    # The PyTorch rows build the base config's network: their FLOPs are
    # those of the first JAX candidate (the base config unless overridden).
    flops = next((getattr(c, 'step_flops', 0.0) for c in candidates
                  if isinstance(c, JaxCandidate)), 0.0)
    kind = jax.devices()[0].device_kind
    dtypes = {name: c.model.dtype for name, c in configs}
    peaks = {}
    for c in candidates:
      one = peak or peak_tflops(kind, dtypes.get(c.name, config.model.dtype))[0]
      peaks[c.name] = one * jax.device_count() if one else None
    return summarise(candidates, results, config.batch_size, flops, peaks)
  finally:
    for c in candidates:
      c.close()
    if worker:
      worker.close()
