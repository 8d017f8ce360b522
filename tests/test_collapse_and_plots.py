"""Collapse watch and end-of-run plots."""

import json
import os

import pytest

from simsiam_jax import metrics_io
from simsiam_jax import plot
from simsiam_jax.evaluation import collapse


def test_warns_once_after_patience_and_names_healthy_checkpoint(caplog):
  watch = collapse.CollapseWatch(threshold=0.2, patience_steps=20, stop=False)
  watch.update(10, {'collapse_std': 0.9})
  watch.checkpoint_saved(10)
  for step in (20, 30):
    watch.update(step, {'collapse_std': 0.05})  # low since 20: not yet 20 steps
    watch.checkpoint_saved(step)   # saved while collapsing: not healthy
  assert 'Collapse' not in caplog.text
  with caplog.at_level('WARNING'):
    watch.update(40, {'collapse_std': 0.04})
    watch.update(50, {'collapse_std': 0.03})
  assert caplog.text.count('Collapse: collapse_std') == 1
  assert 'since step 20' in caplog.text
  assert 'step 10' in caplog.text and 'stop_gradient' in caplog.text


def test_recovery_resets_and_stop_raises():
  watch = collapse.CollapseWatch(threshold=0.2, patience_steps=10, stop=True)
  watch.update(10, {'collapse_std': 0.1})
  watch.update(15, {'collapse_std': 0.5})  # recovered: the clock restarts
  watch.update(20, {'collapse_std': 0.1})
  watch.update(25, {'collapse_std': 0.1})
  with pytest.raises(collapse.Collapsed, match='since step 20'):
    watch.update(30, {'collapse_std': 0.1})


def test_plots_from_metrics(tmp_path):
  writer = metrics_io.JsonlWriter(str(tmp_path))
  for step in (10, 20, 30):
    writer.write_scalars(step, {'loss': -step / 40, 'collapse_std': 0.9,
                                'learning_rate': 0.1, 'epoch': step / 10})
  writer.write_scalars(30, {'knn_top1': 0.7})
  paths = plot.plot_run(str(tmp_path))
  names = sorted(p.rsplit('/', 1)[1] for p in paths)
  assert names == ['collapse_std.png', 'knn_top1.png', 'learning_rate.png',
                   'loss.png']
  for p in paths:
    with open(p, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert json.loads((tmp_path / 'metrics.jsonl').read_text().splitlines()[-1]) == {
      'step': 30, 'knn_top1': 0.7}


def test_runs_overlaid_on_one_plot(tmp_path):
  for run, loss in (('a', -0.5), ('b', -0.99)):
    (tmp_path / run).mkdir()
    writer = metrics_io.JsonlWriter(str(tmp_path / run))
    for step in (10, 20):
      writer.write_scalars(step, {'loss': loss, 'epoch': step / 10})
  paths = plot.plot_runs([str(tmp_path / 'a'), str(tmp_path / 'b')],
                         str(tmp_path / 'out'), prefix='cmp_')
  assert [os.path.basename(p) for p in paths] == ['cmp_loss.png']
  assert os.path.getsize(paths[0]) > 1000


def test_runs_on_the_same_data_share_one_line_per_baseline():
  lines = plot._shared_baselines([  # pylint: disable=protected-access
      ('a', {'raw pixels': 0.8178, 'random init': 0.6934}),
      ('b', {'raw pixels': 0.8178, 'random init': 0.7}),
      ('c', {'raw pixels': 0.8178, 'random init': 0.6934})])
  assert lines == {'raw pixels': 0.8178, 'random init': 0.6934,
                   'random init (b)': 0.7}
  assert plot._shared_baselines([('', {'raw pixels': 0.5})]) == {  # pylint: disable=protected-access
      'raw pixels': 0.5}


def test_object_store_writer_rewrites_instead_of_appending(tmp_path,
                                                            monkeypatch):
  """gs:// cannot append: the JSONL writer rewrites the whole file there."""
  monkeypatch.setattr(metrics_io, 'is_remote', lambda path: True)
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "loss": 0.5}\n')
  writer = metrics_io.JsonlWriter(str(tmp_path))
  writer.write_scalars(2, {'loss': 0.25})
  writer.write_scalars(3, {'loss': 0.125})
  assert metrics_io.read_metrics(str(tmp_path)) == [
      {'step': 1, 'loss': 0.5}, {'step': 2, 'loss': 0.25},
      {'step': 3, 'loss': 0.125}]


def test_knn_plot_draws_the_baselines(tmp_path, monkeypatch):
  writer = metrics_io.JsonlWriter(str(tmp_path))
  writer.write_scalars(10, {'loss': -0.5, 'epoch': 1.0})
  writer.write_scalars(10, {'knn_top1': 0.6, 'knn_raw_pixels': 0.4})
  writer.write_scalars(20, {'knn_top1': 0.7})
  # summary.json wins over metrics.jsonl.
  (tmp_path / 'summary.json').write_text(json.dumps(
      {'knn_top1': 0.7, 'knn_raw_pixels': 0.5, 'knn_random_init': 0.3}))
  drawn = []
  draw = plot._draw_baselines  # pylint: disable=protected-access
  monkeypatch.setattr(plot, '_draw_baselines',
                      lambda ax, baselines: drawn.append(baselines)
                      or draw(ax, baselines))
  paths = plot.plot_run(str(tmp_path))
  assert drawn == [{'raw pixels': 0.5, 'random init': 0.3}]  # kNN plot only
  knn_png = str(tmp_path / 'knn_top1.png')
  assert knn_png in paths and os.path.getsize(knn_png) > 1000
