"""The kNN monitor of a pretraining run: features of the train and test splits.

Beside the kNN score it measures how many directions the features spread
over (`spread`: effective rank and participation ratio, evaluation/spectrum.py)
on a fixed set of clean train images, for the backbone features and for z.

Features are the pooled backbone output with BatchNorm in inference mode,
computed on the mesh; the bank (train split) stays sharded across devices.

Two baselines put the score in context, computed once per dataset by the same
kNN (bank = train split, queries = eval split) and cached on disk:

- raw pixels: the normalised eval-time images, flattened;
- random init: the run's backbone at its initialisation, BatchNorm normalising
  by each eval batch's own statistics.
"""

import functools
import hashlib
import json
import os
from typing import Callable

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from simsiam_jax import parallel
from simsiam_jax import rngs
from simsiam_jax import state as state_lib
from simsiam_jax import workdir as workdir_lib
from simsiam_jax.data import device_augment
from simsiam_jax.data import sources
from simsiam_jax.data import spec
from simsiam_jax.evaluation import knn
from simsiam_jax.evaluation import spectrum

# How features are computed: BN with running averages, BN with the batch's
# statistics, or no network at all.
KINDS = ('inference', 'batch_stats', 'pixels')
_BASELINE_FORMATS = {
    'knn_raw_pixels': 'raw pixels {:.2f}%',
    'knn_random_init': 'random init {:.2f}% (BN batch statistics)'}


def _inference(model, aug, method, variables, x):
  """`method` ('features' or 'represent') with BN in inference mode."""
  x = device_augment.network_input(x, aug)
  return model.apply(variables, x, train=False, method=method)


def _batch_stats(model, aug, method, variables, x):
  """BN normalises by this batch's statistics; updated averages are dropped."""
  x = device_augment.network_input(x, aug)
  out, _ = model.apply(variables, x, train=True, method=method,
                       mutable=['batch_stats'])
  return out


def _pixels(aug, variables, x):
  del variables
  x = device_augment.network_input(x, aug)
  return x.reshape(x.shape[0], -1)


def _check_kind(kind: str):
  if kind not in KINDS:
    raise ValueError(f'kind must be one of {KINDS}, got {kind!r}.')


def _fill_padding(batch: dict) -> dict:
  """Padding rows replaced by copies of real rows.

  With BN on batch statistics, zero padding rows would shift the mean and
  variance that the real rows of the (last) batch are normalised with. (A
  process whose share of a batch is all padding, possible in the last batch
  with several processes, still sends zeros.)
  """
  mask = np.asarray(batch['mask'])
  real, pad = np.flatnonzero(mask), np.flatnonzero(~mask)
  if not len(real) or not len(pad):
    return batch
  image = np.array(batch['image'])
  image[pad] = image[real[np.arange(len(pad)) % len(real)]]
  return {**batch, 'image': image}


class KnnMonitor:
  """Weighted kNN top-1 of the current backbone on `config.data.eval_split`."""

  def __init__(self, config: ml_collections.ConfigDict, model, mesh):
    self.config = config
    self.model = model
    self.mesh = mesh
    self.num_classes = sources.num_classes(config)
    self.local_batch = parallel.check_batch_size(config.eval.batch_size, mesh)
    shardings = dict(
        in_shardings=(parallel.replicated(mesh), parallel.data_sharded(mesh)),
        out_shardings=parallel.data_sharded(mesh))
    aug = config.data.aug

    def jitted(f, method):
      return jax.jit(functools.partial(f, model, aug, method), **shardings)
    self._extract = {
        'inference': jitted(_inference, 'features'),
        'batch_stats': jitted(_batch_stats, 'features'),
        'pixels': jax.jit(functools.partial(_pixels, aug), **shardings)}
    # (backbone features, z): what `spread` measures.
    self._heads = {'inference': jitted(_inference, 'represent'),
                   'batch_stats': jitted(_batch_stats, 'represent')}
    self._concat = jax.jit(jnp.concatenate,
                           out_shardings=parallel.data_sharded(mesh))
    self._memo = {}  # cache key digest -> top-1, for this monitor's life
    self.known_baselines = {}  # the last `baselines()`, shown in the log line
    self.last_confusion = None  # [C, C] counts of the last `__call__`
    # The raw pixels' counts depend on the config alone: computed once.
    self._pixel_confusion = None
    self.known_spread_baselines = {}  # the last `spread_baselines()`

  def features(self, variables, split: str, kind: str = 'inference'):
    """(features [N, D], labels [N], mask [N]) sharded along N on the mesh.

    Args:
      variables: the SimSiam variables ({'params', 'batch_stats'}); unused for
        kind='pixels'.
      split: a split of `config.data`, read by `sources.eval_batches`
        (no augmentation, normalised as the network sees it).
      kind: one of KINDS: backbone features with BN in inference mode, or
        with BN on each batch's statistics, or the flattened images.
    """
    _check_kind(kind)
    feats, labels, masks = zip(*self._forward(
        variables, split, kind, self._extract[kind]))
    return (self._concat(list(feats)), self._concat(list(labels)),
            self._concat(list(masks)))

  def _forward(self, variables, split: str, kind: str, extract,
               max_batches: int | None = None):
    """Yields (extract(variables, images), labels, mask) per eval batch of
    `split` (the first `max_batches`), sharded along the batch on the mesh."""
    variables = {} if kind == 'pixels' else variables
    for i, batch in enumerate(sources.eval_batches(self.config, split,
                                                   self.local_batch)):
      if i == max_batches:
        return
      if kind == 'batch_stats':
        batch = _fill_padding(batch)
      g = parallel.host_to_global(batch, self.mesh)
      yield extract(variables, g['image']), g['label'], g['mask']

  def host_features(self, variables, split: str, kind: str = 'inference'):
    """(features [n, D], labels [n]), numpy on every process, no padding."""
    feats, labels, mask = (multihost_utils.process_allgather(x, tiled=True)
                           for x in self.features(variables, split, kind))
    mask = np.asarray(mask, bool)
    return np.asarray(feats)[mask], np.asarray(labels)[mask]

  def confusion(self, variables, kind: str = 'inference') -> np.ndarray:
    """kNN counts [C, C] (true class, predicted class) on the eval split
    against the train split (see `features`, `knn.knn_confusion`); the
    raw pixels' (kind 'pixels') are computed once and kept."""
    if kind == 'pixels' and self._pixel_confusion is not None:
      return self._pixel_confusion
    kc = self.config.knn
    bank = self.features(variables, self.config.data.train_split, kind)
    test = self.features(variables, self.config.data.eval_split, kind)
    # Queries are small next to the bank: every process takes all of them.
    test = [multihost_utils.process_allgather(x, tiled=True) for x in test]
    counts = knn.knn_confusion(*bank, *test, self.mesh, k=kc.k,
                               temperature=kc.temperature,
                               num_classes=self.num_classes,
                               query_batch=kc.query_batch)
    if kind == 'pixels':
      self._pixel_confusion = counts
    return counts

  def score(self, variables, kind: str = 'inference') -> float:
    """kNN top-1 on the eval split against the train split (see `features`)."""
    return knn.accuracy(self.confusion(variables, kind))

  def spread(self, variables, kind: str = 'inference') -> dict[str, float]:
    """Effective rank and participation ratio of the features of clean images.

    The images are the first `config.knn.rank_images` of this process's
    share of the train split, in order (the same at every call; several
    processes each take the first of their own share), without augmentation.

    Args:
      variables: as for `features`.
      kind: one of KINDS; 'pixels' measures the flattened images (no z).

    Returns:
      {'feature_rank', 'feature_pr'} of the backbone features (or pixels),
      and {'z_rank', 'z_pr'} of the projector output unless kind='pixels'.
    """
    _check_kind(kind)
    n = self.config.knn.rank_images
    extract = (self._extract['pixels'] if kind == 'pixels'
               else self._heads[kind])
    outs, _, masks = zip(*self._forward(
        variables, self.config.data.train_split, kind, extract,
        max_batches=-(-n // self.config.eval.batch_size)))

    def on_host(parts):
      return np.asarray(multihost_utils.process_allgather(
          self._concat(list(parts)), tiled=True))
    mask = on_host(masks).astype(bool)
    named = ({'feature': outs} if kind == 'pixels' else
             {'feature': [h for h, _ in outs], 'z': [z for _, z in outs]})
    out = {}
    for name, parts in named.items():
      spread = spectrum.spread(on_host(parts)[mask][:n])
      out.update({f'{name}_{k}': float(v) for k, v in spread.items()})
    return out

  def spread_baselines(self, seed: int | None = None) -> dict[str, float]:
    """`spread` of the raw pixels and of the random-init network (BN on batch
    statistics), named like `baselines`: 'feature_rank_raw_pixels', ..."""
    if not self.config.knn.baselines or self.config.knn.rank_images <= 0:
      return {}
    seed = self.config.seed if seed is None else seed
    out = {f'{k}_random_init': v for k, v in self.spread(
        self.random_init_variables(seed), 'batch_stats').items()}
    if self.pixel_dim <= self.config.knn.max_pixel_dim:
      out.update({f'{k}_raw_pixels': v
                  for k, v in self.spread(None, 'pixels').items()})
    self.known_spread_baselines = out
    return out

  def evaluate(self, state) -> dict[str, float]:
    """{'knn_top1'} (`__call__`) and, with knn.rank_images > 0, `spread`."""
    out = {'knn_top1': self(state)}
    if self.config.knn.rank_images > 0:
      variables = {'params': state.params, 'batch_stats': state.batch_stats}
      out.update(self.spread(variables))
      base = self.known_spread_baselines
      shown = []
      for k in ('feature_rank', 'feature_pr', 'z_rank', 'z_pr'):
        refs = [f'{b} {base[f"{k}_{b}"]:.1f}' for b in
                ('raw_pixels', 'random_init') if f'{k}_{b}' in base]
        shown.append(f'{k} {out[k]:.1f}' +
                     (f' ({", ".join(refs)})' if refs else ''))
      logging.info('Spread of %d clean train images: %s',
                   self.config.knn.rank_images, ' | '.join(shown))
    return out

  def __call__(self, state) -> float:
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    self.last_confusion = self.confusion(variables)
    top1 = knn.accuracy(self.last_confusion)
    shown = [f'SimSiam {100 * top1:.2f}%'] + [
        _BASELINE_FORMATS[k].format(100 * v)
        for k, v in self.known_baselines.items()]
    kc = self.config.knn
    logging.info('kNN (k=%d, T=%g) top-1 on %s: %s', kc.k, kc.temperature,
                 self.config.data.eval_split, ' | '.join(shown))
    return top1

  @property
  def pixel_dim(self) -> int:
    """Values per image: the raw-pixel feature dimension."""
    dc = self.config.data
    return dc.image_size * dc.image_size * dc.channels

  def random_init_variables(self, seed: int):
    """The network pretraining starts from with `config.seed=seed`, replicated.

    Drawn as `state.simsiam_initializer` draws it: `model.init` on the
    'init' key of `seed`, inputs [2, H, W, C], made by `state.create`.
    """
    x = jnp.zeros((2, *spec.image_shape(self.config.data)), jnp.float32)
    return state_lib.create(
        lambda rng: self.model.init(rng, x, x, train=True), self.mesh,
        rngs.key(seed, 'init'))

  def baselines(self, seed: int | None = None) -> dict[str, float]:
    """kNN top-1 of raw pixels and of the randomly initialised backbone.

    Same kNN, splits and settings as the monitor. 'knn_raw_pixels' scores the
    flattened normalised eval-time images (skipped, with a log line, beyond
    `knn.max_pixel_dim` values per image). 'knn_random_init' scores the
    backbone at its initialisation from `seed`, with BatchNorm normalising by
    each eval batch's statistics (train=True, updated averages discarded):
    the initial running averages (mean 0, variance 1) describe no data.
    Each value is computed once and cached, in memory and on disk
    (`cached`); later kNN log lines show them.

    Args:
      seed: the seed of the initialisation; None: `config.seed`.

    Returns:
      {'knn_raw_pixels': float, 'knn_random_init': float}, or {} when
      `config.knn.baselines` is False.
    """
    if not self.config.knn.baselines:
      return {}
    seed = self.config.seed if seed is None else seed
    key = knn_key(self.config)
    out = {}
    if self.pixel_dim <= self.config.knn.max_pixel_dim:
      out['knn_raw_pixels'] = cached(
          self.config, 'knn_raw_pixels', key,
          lambda: self.score(None, 'pixels'), self._memo)
    else:
      logging.info('No raw-pixel kNN baseline: %d values per image > '
                   'knn.max_pixel_dim=%d.', self.pixel_dim,
                   self.config.knn.max_pixel_dim)
    # BN batch statistics depend on the batch: its size is part of the key.
    key = {**key, 'model': repr(self.model), 'init_seed': seed,
           'batch_size': self.config.eval.batch_size}
    out['knn_random_init'] = cached(
        self.config, 'knn_random_init', key,
        lambda: self.score(self.random_init_variables(seed), 'batch_stats'),
        self._memo)
    self.known_baselines = out
    return out


def data_key(config: ml_collections.ConfigDict) -> dict:
  """What fixes the eval-time images and labels of both splits."""
  dc = config.data
  key = {'dataset': dc.dataset, 'train_split': dc.train_split,
         'eval_split': dc.eval_split, 'image_size': dc.image_size,
         'channels': dc.channels, 'eval_crop_fraction': dc.eval_crop_fraction,
         'resident': dc.resident, 'mean': list(dc.aug.mean),
         'std': list(dc.aug.std)}
  if dc.dataset == 'synthetic':  # made from the seed
    key.update(seed=config.seed, num_examples=dc.synthetic_num_examples)
  return key


def knn_key(config: ml_collections.ConfigDict) -> dict:
  return {**data_key(config), 'k': config.knn.k,
          'temperature': config.knn.temperature}


def cache_dir(config: ml_collections.ConfigDict) -> epath.Path:
  """knn.cache_dir, else DATA_DIR/simsiam_jax, else ~/.cache/simsiam_jax."""
  if config.knn.cache_dir:
    return epath.Path(config.knn.cache_dir)
  if config.data.data_dir:
    return epath.Path(config.data.data_dir) / 'simsiam_jax'
  return epath.Path(os.path.expanduser('~/.cache/simsiam_jax'))


def cached(config: ml_collections.ConfigDict, name: str, key: dict,
           compute: Callable[[], float], memo: dict | None = None) -> float:
  """`compute()`, or the value an earlier call saved for (name, key).

  One small JSON file per value in `cache_dir(config)`, holding its key in
  full. Process 0 reads it and tells the others, so that all processes
  compute (collectively) or none does. A cache that cannot be read or written
  only costs the computation.
  """
  key = json.loads(json.dumps({'name': name, **key}, sort_keys=True))
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
  memo = {} if memo is None else memo
  if digest in memo:
    return memo[digest]
  path = cache_dir(config) / f'{name}_{digest[:16]}.json'
  value = _read_cache(path, key) if jax.process_index() == 0 else None
  if jax.process_count() > 1:
    value = float(multihost_utils.broadcast_one_to_all(
        np.float32(np.nan if value is None else value)))
    value = None if np.isnan(value) else value
  if value is None:
    value = float(compute())
    if jax.process_index() == 0:
      _write_cache(path, key, value)
  else:
    logging.info('%s = %.4f, cached in %s.', name, value, path)
  memo[digest] = value
  return value


def _read_cache(path: epath.Path, key: dict) -> float | None:
  try:
    entry = json.loads(path.read_text())
    return float(entry['value']) if entry['key'] == key else None
  except Exception:  # pylint: disable=broad-except
    return None  # missing, unreadable or foreign: compute it again


def _write_cache(path: epath.Path, key: dict, value: float):
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_atomic(path, json.dumps({'key': key, 'value': value},
                                              indent=1))
  except Exception as e:  # pylint: disable=broad-except
    # Any storage's error (local, gs://): the value is still returned.
    logging.warning('Could not cache %s in %s (%s).', key['name'], path, e)
