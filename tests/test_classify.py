"""Evaluation modes on a pretrained checkpoint: standalone kNN, linear probe, fine-tuning.

All on the in-memory synthetic source (10 separable classes), no TensorFlow.
"""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from simsiam_jax import checkpointing
from simsiam_jax import classify
from simsiam_jax import pretrained
from simsiam_jax import train


def _config(**overrides):
  c = tiny.get_config()
  c.knn.batch_size = 64
  c.knn.k = 20
  c.update_from_flattened_dict(overrides)
  return c


@pytest.fixture(scope='module')
def pretrain_dir(tmp_path_factory):
  """A 4-step tiny pretraining run that scored kNN at its end."""
  workdir = str(tmp_path_factory.mktemp('pretrain'))
  summary = train.train_and_evaluate(_config(**{'knn.every_epochs': 0}),
                                     workdir)
  return workdir, summary


def _saved_items(directory, step):
  path = os.path.join(directory, checkpointing.CHECKPOINT_DIR, str(step),
                      'state')
  return ocp.StandardCheckpointer().restore(path)


def test_knn_eval_mode_matches_the_monitor(pretrain_dir, tmp_path):
  workdir, pre_summary = pretrain_dir
  config = _config(mode='knn_eval', **{'pretrained.workdir': workdir})
  summary = pretrained.knn_eval(config, str(tmp_path))
  assert summary['step'] == 4
  assert summary['knn_top1'] == pre_summary['knn_top1']
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['knn_top1'] == summary['knn_top1']


def test_linear_probe_freezes_the_backbone_and_separates_classes(
    pretrain_dir, tmp_path):
  workdir, _ = pretrain_dir
  config = _config(
      mode='linear', batch_size=64, num_train_steps=200,
      log_every_steps=100, checkpoint_every_steps=1000,
      **{'pretrained.workdir': workdir, 'optim.base_lr': 30.0,
         'optim.weight_decay': 0.0})
  summary = classify.train_and_evaluate(config, str(tmp_path))
  assert summary['linear_top1'] > 0.95, summary
  assert summary['backbone_unchanged']
  # Independently: the probe's saved backbone equals the pretrained one, bit
  # for bit (params and BN statistics), while the head trained.
  probe = _saved_items(str(tmp_path), 200)
  pre = _saved_items(workdir, 4)
  for key in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, probe[key]['backbone'],
                 pre[key]['backbone'])
  assert np.abs(probe['params']['head']['kernel']).max() > 0.05


def test_finetuning_trains_the_backbone(pretrain_dir, tmp_path):
  workdir, _ = pretrain_dir
  config = _config(
      mode='finetune', batch_size=64, num_train_steps=20, log_every_steps=10,
      **{'pretrained.workdir': workdir, 'optim.base_lr': 0.5,
         'classifier.backbone_base_lr': 0.05})
  summary = classify.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= summary['finetune_top1'] <= 1.0
  assert 'backbone_unchanged' not in summary
  tuned, pre = _saved_items(str(tmp_path), 20), _saved_items(workdir, 4)
  diffs = jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.abs(a - b).max()),
      tuned['params']['backbone'], pre['params']['backbone']))
  assert max(diffs) > 0
  # BN statistics follow the new data while fine-tuning.
  stats = jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.abs(a - b).max()),
      tuned['batch_stats']['backbone'], pre['batch_stats']['backbone']))
  assert max(stats) > 0


def test_missing_or_same_workdir_is_a_clear_error(pretrain_dir, tmp_path):
  workdir, _ = pretrain_dir
  with pytest.raises(pretrained.PretrainedNotFound, match='pretrained.workdir'):
    pretrained.knn_eval(_config(mode='knn_eval'), str(tmp_path))
  with pytest.raises(pretrained.PretrainedNotFound, match='No checkpoints/'):
    pretrained.knn_eval(_config(mode='knn_eval', **{
        'pretrained.workdir': str(tmp_path / 'nothing')}), str(tmp_path))
  with pytest.raises(pretrained.PretrainedNotFound, match='its own --workdir'):
    pretrained.knn_eval(_config(mode='knn_eval', **{
        'pretrained.workdir': workdir}), workdir)
  # Nothing was written into the pretraining run.
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
