"""The JAX-vs-PyTorch step benchmark: same network on both sides, worker, suite."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import step_compare
from benchmarks import step_report
from configs import cifar10
from configs import fashion_mnist
from configs import imagenet
from simsiam_jax.models import simsiam

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TORCH = importlib.util.find_spec('torch') is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason='torch not installed')


def _jax_param_sizes(config):
  model = simsiam.create_model(config.model)
  size = config.data.image_size
  x = jnp.zeros((2, size, size, config.data.channels))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, x))
  return sorted(p.size for p in jax.tree.leaves(shapes['params']))


@needs_torch
@pytest.mark.parametrize('get_config', [fashion_mnist.get_config,
                                        cifar10.get_config,
                                        imagenet.get_config],
                         ids=['demo', 'resnet18_cifar', 'resnet50'])
def test_torch_model_has_the_config_widths(get_config):
  from benchmarks import torch_simsiam_step  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  config = get_config()
  spec = step_compare.torch_spec(config)
  assert spec['proj_hidden_dim'] == config.model.proj_hidden_dim
  model = torch_simsiam_step.simsiam({**torch_simsiam_step.DEFAULT_SPEC,
                                      **spec})
  torch_sizes = sorted(p.numel() for p in model.parameters())
  # Same count, and tensor by tensor the same sizes.
  assert sum(torch_sizes) == sum(_jax_param_sizes(config))
  assert torch_sizes == _jax_param_sizes(config)


def test_overrides_parse_by_field_type():
  parts = step_compare.split_top_level(
      'model.conv_impl=xla,model.stage_sizes=(1,1)+model.width=8')
  assert parts == ['model.conv_impl=xla', 'model.stage_sizes=(1,1)+model.width=8']
  c = step_compare.with_overrides(cifar10.get_config(), parts[1])
  assert c.model.stage_sizes == (1, 1) and c.model.width == 8
  assert cifar10.get_config().model.width == 64  # the original is untouched
  with pytest.raises(ValueError, match='no field'):
    step_compare.with_overrides(cifar10.get_config(), 'model.widht=8')


def test_peak_tflops_by_device_kind():
  assert step_compare.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16')[0] == 989.4
  assert step_compare.peak_tflops('NVIDIA H200', 'float32')[0] == 494.7
  assert step_compare.peak_tflops('cpu', 'float32') == (None, '')


def _fake(base, name, step_s, calls, fail=False):
  """A candidate of `base`'s type that takes `step_s` per step, no compiling."""

  class Fake(base):

    def __init__(self):  # pylint: disable=super-init-not-called
      self.name, self.framework, self.step_flops = name, name, 4e9

    def setup(self):
      if fail:
        raise RuntimeError('out of memory')
      return {'first_step_s': 1.0, 'device': 'fake'}

    def run(self, steps):
      calls.append(name)
      return {'wall_s': step_s * steps, 'cpu_s': 2 * step_s * steps}

    def close(self):
      pass

  return Fake()


def test_rounds_interleave_and_ratios():
  calls = []
  cands = [_fake(step_compare.JaxCandidate, 'j', 0.2, calls),
           _fake(step_compare.TorchCandidate, 't', 0.1, calls),
           _fake(step_compare.TorchCandidate, 'bad', 0.1, calls, fail=True)]
  results = step_compare.interleave(cands, rounds=3, steps=2, warmup=1,
                                    log=lambda s: None)
  assert calls == ['j', 't'] + ['j', 't'] * 3  # warm-ups, then A B A B A B
  rows = step_compare.summarise(cands, results, 8, 4e9, {'j': 10.0})
  j, t, bad = rows
  assert j['ratio_vs_t'] == (2.0, 2.0) and 'ratio_vs_bad' not in j
  assert j['step_ms_median'] == pytest.approx(200.0)
  assert j['images_per_sec_median'] == pytest.approx(40.0)
  assert j['cpu_per_wall_median'] == pytest.approx(2.0)
  assert j['mfu_median'] == pytest.approx(4e9 / 0.2 / 1e12 / 10.0)
  assert 'mfu_median' not in t and 'out of memory' in bad['error']
  table = step_report.table_rows('bench', rows)
  assert 'vs t: 2.00 / 2.00' in table and 'failed: RuntimeError' in table
  assert all(line.count('|') == step_report.table_head().count('|') // 2
             for line in table.splitlines())


def test_variant_rows_use_their_own_batch_and_flops():
  # A variant that changes the batch (or the network) is timed per step of
  # its own batch: images/s and FLOP rates must use its numbers, not the
  # base config's.
  calls = []
  base = _fake(step_compare.JaxCandidate, 'base', 0.2, calls)
  half = _fake(step_compare.JaxCandidate, 'batch_size=4', 0.1, calls)
  half.config = step_compare.with_overrides(fashion_mnist.get_config(),
                                            'batch_size=4')
  half.step_flops = 1e9
  results = step_compare.interleave([base, half], rounds=2, steps=1,
                                    warmup=0, log=lambda s: None)
  b, h = step_compare.summarise([base, half], results, 8, 4e9, {})
  assert b['images_per_sec_median'] == pytest.approx(8 / 0.2)
  assert b['xla_gflop_per_image'] == pytest.approx(4e9 / 8 / 1e9)
  assert h['images_per_sec_median'] == pytest.approx(4 / 0.1)
  assert h['xla_gflop_per_image'] == pytest.approx(1e9 / 4 / 1e9)
  assert h['tflops_median'] == pytest.approx(1e9 / 0.1 / 1e12)
  assert h['batch_size'] == 4 and 'batch_size' not in b


@needs_torch
def test_torch_worker_runs_steps_and_survives_errors():
  worker = step_compare.TorchWorker(sys.executable)
  try:
    spec = {'width': 4, 'stage_sizes': [1, 1, 1, 1], 'proj_hidden_dim': 16,
            'proj_dim': 16, 'pred_hidden_dim': 4, 'image_size': 8,
            'batch_size': 4}
    info = worker.call(op='setup', name='a', spec=spec, compile=False)
    assert info['first_step_s'] > 0 and info['params'] > 0
    out = worker.call(op='run', name='a', steps=2)
    assert out['wall_s'] > 0 and out['cpu_s'] >= 0
    with pytest.raises(step_compare.TorchWorkerError):
      worker.call(op='run', name='missing', steps=1)
    assert worker.call(op='run', name='a', steps=1)['wall_s'] > 0
  finally:
    worker.close()
  assert worker.proc.returncode == 0


@pytest.mark.slow
def test_suite_quick_cpu(tmp_path):
  output = tmp_path / 'suite.md'
  env = dict(os.environ)
  # One CPU device, as the suite runs outside the tests.
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(
      '--xla_force_host_platform_device_count=8', '').strip()
  if not env['XLA_FLAGS']:
    del env['XLA_FLAGS']
  env['PYTHONPATH'] = REPO_ROOT
  entries = ['resnet18_cifar_bf16', 'resnet18_cifar_fp32']  # ResNet-50: test_train
  subprocess.run(
      [sys.executable, 'benchmarks/gpu_suite.py', '--quick',
       f'--entries={",".join(entries)},augment', f'--output={output}',
       '--torch_python=' + (sys.executable if HAS_TORCH else 'none')],
      cwd=REPO_ROOT, env=env, check=True, timeout=900)
  table = output.read_text()
  assert '| benchmark | implementation |' in table
  rows = [json.loads(l) for l in
          (tmp_path / 'suite.jsonl').read_text().splitlines()]
  steps = [r for r in rows if 'candidate' in r and
           r['benchmark'].split(':')[0] in entries]
  expected = ['jax'] + (['torch_eager'] if HAS_TORCH else [])
  for entry in entries:
    got = [r for r in steps if r['benchmark'].startswith(entry + ':')]
    assert [r['candidate'] for r in got] == expected
    for r in got:
      assert r['step_ms_median'] > 0 and r['images_per_sec_median'] > 0
      assert r['cpu_per_wall_median'] > 0 and r['xla_gflop_per_image'] > 0
      assert r['benchmark'] in table
    if HAS_TORCH:
      assert got[0]['ratio_vs_torch_eager'][1] > 0
  augment = [r for r in rows if r['benchmark'].startswith('augment')]
  assert [r['candidate'] for r in augment] == ['device', 'host'] * 2
  for r in augment:
    assert r.get('images_per_sec_median', 0) > 0 or r['skipped']


def test_step_profile_reads_hlo_and_trace(tmp_path):
  """step_profile: ENTRY instructions with their readers, op kinds, and
  per-step durations from a Perfetto trace."""
  import gzip  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import json  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import jax  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from benchmarks import step_profile  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  f = jax.jit(lambda x, w: jnp.dot(jnp.transpose(jnp.exp(x)), w))
  text = f.lower(jnp.ones((64, 32)), jnp.ones((64, 8))).compile().as_text()
  entry = step_profile.parse_entry(text)
  dots = [n for n, v in entry.items() if v[1] == 'dot' or 'dot' in n]
  assert dots, text
  assert any(step_profile.consumers(entry, o) for o in entry[dots[0]][2])
  assert step_profile.kind_of('transpose_copy_fusion.3', None) == 'transpose'
  assert step_profile.kind_of('ynn_fusion.1', None) == 'ynnpack'
  assert step_profile.kind_of('add_fusion', None) == 'other'
  trace = {'traceEvents': [
      {'ph': 'X', 'name': 'ynn_fusion.1', 'dur': 300},
      {'ph': 'X', 'name': 'ynn_fusion.1', 'dur': 300},
      {'ph': 'X', 'name': 'ThunkExecutor::Execute', 'dur': 9000},
      {'ph': 'X', 'name': '$profiler.py:1 stop', 'dur': 9000},
      {'ph': 'i', 'name': 'add_fusion', 'dur': 5}]}
  (tmp_path / 'x').mkdir()
  with gzip.open(tmp_path / 'x' / 'host.trace.json.gz', 'wt') as g:
    json.dump(trace, g)
  assert step_profile.op_durations(str(tmp_path), steps=2) == {
      'ynn_fusion.1': 300.0}


def test_shifted_rows_weight_gradient_equals_xla_convolution_gradient():
  from benchmarks import weight_grad_forms  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  kx, ky = jax.random.split(jax.random.key(3))
  x = jax.random.normal(kx, (3, 5, 5, 4))
  dy = jax.random.normal(ky, (3, 5, 5, 6))
  ref = weight_grad_forms.xla_weight_grad(x, dy)
  got = weight_grad_forms.shifted_rows_weight_grad(x, dy)
  assert got.shape == (3, 3, 4, 6)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # Not trivially equal: the corner offset sees other pixels than the centre.
  assert float(jnp.max(jnp.abs(ref[0, 0] - ref[1, 1]))) > 0.1
