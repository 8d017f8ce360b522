"""The package's import graph: one way, no cycles, TensorFlow where it belongs."""

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'simsiam_jax'
# Modules that may import TensorFlow (at the top or inside a function).
TF_MODULES = {'simsiam_jax.data.augment', 'simsiam_jax.data.tfds_pipeline',
              'simsiam_jax.data.fashion_mnist'}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules() -> dict:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def _imports(path: pathlib.Path, known) -> set:
  """The package modules `path` imports anywhere in it (top level or in a function)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    else:
      continue
    found |= {n for n in names if n in known}
  return found


def _graph() -> dict:
  modules = _modules()
  graph = {name: _imports(path, modules) - {name}
           for name, path in modules.items()}
  # A package's __init__ is imported with each of its modules: not an edge.
  return {m: {d for d in deps if not m.startswith(d + '.')}
          for m, deps in graph.items()}


def _cycle(graph: dict):
  """One import cycle as a list of modules, or None."""
  state = {}

  def visit(m, path):
    state[m] = 'open'
    for d in sorted(graph[m]):
      if state.get(d) == 'open':
        return path[path.index(d):] + [d]
      if d not in state:
        found = visit(d, path + [d])
        if found:
          return found
    state[m] = 'done'
    return None

  for m in sorted(graph):
    if m not in state:
      found = visit(m, [m])
      if found:
        return found
  return None


def test_the_graph_sees_known_edges():
  """The checker reads top-level and function-level imports (so it can fail)."""
  graph = _graph()
  assert 'simsiam_jax.loop' in graph['simsiam_jax.train']
  assert 'simsiam_jax.data.tfds_pipeline' in graph['simsiam_jax.data.sources']
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


def test_no_import_cycle():
  assert _cycle(_graph()) is None


def test_tensorflow_only_in_the_tf_data_modules():
  offenders = []
  for name, path in _modules().items():
    for node in ast.walk(ast.parse(path.read_text())):
      mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
              else [node.module or ''] if isinstance(node, ast.ImportFrom)
              else [])
      if any(m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')
             for m in mods) and name not in TF_MODULES:
        offenders.append(name)
  assert not offenders


def test_every_module_imports_alone():
  """Each module first, with none of the package loaded before it.

  One interpreter for all (cheap): the package's modules are forgotten
  after each import, except the TFDS builder, which registers once.
  """
  names = [n for n in _modules() if not n.endswith('__main__')]
  code = ('import importlib, sys\n'
          'for name in sys.argv[1:]:\n'
          '  before = set(sys.modules)\n'
          '  importlib.import_module(name)\n'
          '  for m in set(sys.modules) - before:\n'
          '    if m.startswith("simsiam_jax") and m != '
          '"simsiam_jax.data.fashion_mnist":\n'
          '      del sys.modules[m]\n')
  env = {**os.environ, 'PYTHONPATH': str(ROOT)}
  subprocess.run([sys.executable, '-c', code, *names], check=True, env=env,
                 cwd=ROOT, timeout=300)
