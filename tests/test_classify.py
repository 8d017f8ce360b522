"""Evaluation modes on a pretrained checkpoint: standalone kNN, linear probe, fine-tuning.

Also the semi-supervised setting: a class-balanced labelled subset and the
from-scratch baseline.

All on the in-memory synthetic source (10 separable classes), no TensorFlow.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from simsiam_jax import checkpointing
from simsiam_jax import classify
from simsiam_jax import pretrained
from simsiam_jax import train
from simsiam_jax.data import sources
from simsiam_jax.data import synthetic
from simsiam_jax.models import simsiam


def _config(**overrides):
  c = tiny.get_config()
  c.eval.batch_size = 64
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
  # The spread of the same checkpoint's features, and its baselines.
  for k in ('feature_rank', 'feature_pr', 'z_rank', 'z_pr',
            'feature_rank_raw_pixels', 'z_rank_random_init'):
    assert summary[k] == pytest.approx(pre_summary[k], rel=1e-5), k
  assert 1 <= summary['feature_rank'] <= 64  # width 8: 64-d features
  # Every log line of the pretraining run measured its batch's z.
  rows = [json.loads(line) for line in open(os.path.join(workdir,
                                                         'metrics.jsonl'))]
  logged = [r for r in rows if 'loss' in r]
  assert logged and all(1 <= r['batch_z_rank'] <= 16 for r in logged)
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
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == [
      '2', '2.digests.json', '4', '4.digests.json']


# Semi-supervised setting: a labelled subset, and the from-scratch baseline.


def test_label_subset_is_class_balanced_sized_and_seeded():
  rng = np.random.default_rng(0)
  labels = rng.permutation(np.repeat(np.arange(4), [100, 50, 7, 1]))
  sub = sources.select_subset(labels, 0.1, seed=0)
  # round(0.1 * n) per class, at least one: 10, 5, round(0.7) = 1, 1.
  assert np.bincount(labels[sub], minlength=4).tolist() == [10, 5, 1, 1]
  assert np.all(np.diff(sub) > 0)  # sorted, no repeats
  np.testing.assert_array_equal(sub, sources.select_subset(labels, 0.1, 0))
  assert not np.array_equal(sub, sources.select_subset(labels, 0.1, 1))
  half = sources.select_subset(labels, 0.5, seed=0)
  assert np.bincount(labels[half]).tolist() == [50, 25, 4, 1]  # 3.5 -> 4
  np.testing.assert_array_equal(
      sources.select_subset(labels, 1.0, seed=3), np.arange(158))
  for bad in (0.0, 1.5):
    with pytest.raises(ValueError, match='label_fraction'):
      sources.select_subset(labels, bad, 0)


def _subset_config(**overrides):
  return _config(**{'mode': 'finetune', 'classifier.label_fraction': 0.25,
                    **overrides})


def test_subset_is_the_same_for_any_topology():
  """Chosen from (labels, fraction, seed) alone; processes split it exactly.

  Nothing in the choice sees the devices: 1 or 8 devices in one process
  give the same subset and the same host batches (the per-process batch is
  the global one). Several processes share it out disjointly.
  """
  indices, labels = sources.label_subset(_subset_config())
  # 256 synthetic examples, labels i % 10: 26 of classes 0-5 (6.5 -> 7), 25
  # of classes 6-9 (6.25 -> 6).
  assert np.bincount(labels).tolist() == [7] * 6 + [6] * 4
  np.testing.assert_array_equal(labels, indices % 10)
  for count in (1, 2, 8):
    shares = [sources.process_share(indices, p, count)
              for p in range(count)]
    np.testing.assert_array_equal(np.concatenate(shares), indices)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
  assert sources.label_subset(_config()) is None  # fraction 1: all


def _constant_images(num_train_examples, image_size, channels, seed,
                     split='train'):
  """Image i is the constant i: the index survives the synthetic views."""
  del seed
  n = synthetic.split_size(num_train_examples, split)
  images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                           (n, image_size, image_size, channels))
  return images.copy(), np.arange(n, dtype=np.int32) % synthetic.NUM_CLASSES


def _drawn(batch):
  return np.round(batch['image'].mean(axis=(1, 2, 3))).astype(int)


def test_in_memory_training_draws_only_the_subset(monkeypatch):
  monkeypatch.setattr(synthetic, 'labelled_images', _constant_images)
  config = _subset_config()
  indices, _ = sources.label_subset(config)
  it = sources.create_train_iterator(config, 16, views=1,
                                            subset=indices)
  batches = [next(it) for _ in range(3 * len(indices) // 16)]  # 3 epochs
  drawn = np.concatenate([_drawn(b) for b in batches])
  assert set(drawn) == set(indices.tolist())
  # Each pass is a permutation: the first epoch shows every example once.
  first = drawn[:len(indices) // 16 * 16]
  assert len(set(first)) == len(first)
  np.testing.assert_array_equal(
      np.concatenate([b['label'] for b in batches]), drawn % 10)
  # Resuming at batch 5 continues the same stream.
  resumed = sources.create_train_iterator(config, 16, start_step=5,
                                                 views=1, subset=indices)
  np.testing.assert_array_equal(next(resumed)['image'], batches[5]['image'])


def _fresh_backbone(config):
  """The backbone parameters a new classifier of `config` draws from its seed."""
  model = classify.Classifier(simsiam.create_model(config.model).backbone,
                              synthetic.NUM_CLASSES, frozen=False)
  x = jnp.zeros((2, config.data.image_size, config.data.image_size, 3))
  with jax.threefry_partitionable(False):  # as state_lib.create
    fresh = jax.jit(model.init, static_argnames='train')(
        jax.random.key(config.seed), x, train=False)
  return jax.device_get(fresh['params']['backbone'])


def test_scratch_subset_run_starts_fresh_and_resumes_bit_identically(
    pretrain_dir, tmp_path):
  """From scratch on a 25 % subset: fresh weights, the recorded subset, resume.

  lr 0 keeps the parameters at their initial values, while BatchNorm
  statistics and the momentum still follow every batch the run drew.
  """
  config = _subset_config(**{
      'classifier.from_scratch': True, 'batch_size': 16, 'num_train_steps': 6,
      'checkpoint_every_steps': 3, 'optim.base_lr': 0.0})
  whole, broken = str(tmp_path / 'whole'), str(tmp_path / 'broken')
  summary = classify.train_and_evaluate(config, whole)
  assert summary['from_scratch'] and summary['pretrained'] == ''
  # 66 examples make 4 steps of 16 an epoch.
  assert summary['num_train_examples'] == 66 and summary['epochs'] == 1.5
  with open(os.path.join(whole, classify.SUBSET_FILE)) as f:
    record = json.load(f)
  assert record['indices'] == sources.label_subset(config)[0].tolist()
  assert record['class_counts'] == [7] * 6 + [6] * 4
  # Random weights: those of a fresh init, none of the pretrained ones.
  state = _saved_items(whole, 6)
  params = state['params']['backbone']
  jax.tree.map(np.testing.assert_array_equal, params, _fresh_backbone(config))
  pre = _saved_items(pretrain_dir[0], 4)['params']['backbone']
  assert all(jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.array_equal(a, b), params, pre)))
  # Stopped after step 3, the rerun resumes there and ends where the
  # unbroken run did, bit for bit: the same subset and batches.
  shutil.copytree(whole, broken)
  shutil.rmtree(os.path.join(broken, checkpointing.CHECKPOINT_DIR, '6'))
  classify.train_and_evaluate(config, broken)
  resumed = _saved_items(broken, 6)
  for key in ('batch_stats', 'opt_state'):
    jax.tree.map(np.testing.assert_array_equal, state[key], resumed[key])
  # Resuming on other labels is refused.
  other = config.copy_and_resolve_references()
  other.classifier.label_seed = 1
  with pytest.raises(ValueError, match='classifier.label_seed: saved 0, now 1'):
    classify.train_and_evaluate(other, broken)


def test_scratch_and_subset_settings_fail_clearly(pretrain_dir, tmp_path):
  workdir, _ = pretrain_dir
  scratch = {'classifier.from_scratch': True}
  with pytest.raises(ValueError, match='drop one of the two'):
    classify.train_and_evaluate(_subset_config(**scratch, **{
        'pretrained.workdir': workdir}), str(tmp_path))
  with pytest.raises(ValueError, match='mode=finetune'):
    classify.train_and_evaluate(_subset_config(mode='linear', **scratch),
                                str(tmp_path))
  with pytest.raises(ValueError, match='augment_on=host'):
    classify.train_and_evaluate(_subset_config(**scratch, **{
        'data.augment_on': 'device'}), str(tmp_path))
  with pytest.raises(ValueError, match='fewer than batch_size=128'):
    classify.train_and_evaluate(_subset_config(batch_size=128, **scratch),
                                str(tmp_path))
