"""A fast linear probe: logistic regression on frozen features, in seconds.

  python -m simsiam_jax.main --config=configs/fashion_mnist.py \
      --config.mode=fast_probe --config.pretrained.workdir=PRETRAIN_DIR \
      --workdir=EVAL_DIR

The backbone's features of both splits (BN in inference mode, no
augmentation: the kNN monitor's feature code) are extracted once; a
multinomial logistic regression is then fit on them, full batch, by L-BFGS
(`optax.lbfgs`) on one device. Features are standardised with the train
split's mean and std. The L2 strength is picked from `config.probe.l2_grid`
by accuracy on a held-out part of the train split (never the test split),
then the head is refit on the whole train split and scored on the test split.

Not the paper's protocol (SGD on augmented images for 90 epochs: mode
'linear'), but a quick, deterministic reading of linear separability, and the
same function on raw pixels gives its baseline.
"""

import functools
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from simsiam_jax import loop
from simsiam_jax import parallel
from simsiam_jax import pretrained
from simsiam_jax import workdir as workdir_lib
from simsiam_jax.evaluation import monitor

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)


def standardize(train: np.ndarray, test: np.ndarray):
  """Both [N, D] arrays scaled by the train split's per-feature mean and std.

  Constant features (dead ReLU channels) keep scale 1.
  """
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 1e-6 * max(float(std.max()), 1e-30), std, 1.0)
  return (train - mean) / std, (test - mean) / std


def _logits(params, x):
  # HIGHEST: no TF32 / bf16 passes on GPUs, whose rounding upsets L-BFGS.
  return jnp.dot(x, params['w'], precision=jax.lax.Precision.HIGHEST
                 ) + params['b']


def objective(params, x, y, l2):
  """Mean softmax cross-entropy + (l2 / 2) |w|^2 (the bias is not decayed)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(_logits(params, x), y)
  return jnp.mean(ce) + 0.5 * l2 * jnp.sum(jnp.square(params['w']))


@functools.partial(jax.jit, static_argnames=('max_iters',))
def fit(params, x, y, l2, *, max_iters: int, tol: float = 1e-6):
  """Minimises `objective` from `params` by L-BFGS.

  Args:
    params: {'w': [D, C], 'b': [C]}, the start.
    x: [N, D] float32 features; y: [N] int labels.
    l2: the L2 strength.
    max_iters: at most this many L-BFGS iterations.
    tol: stops earlier once the gradient's norm is below it.

  Returns:
    (params, number of iterations run).
  """
  loss = functools.partial(objective, x=x, y=y, l2=l2)
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value,
                                   grad=grad, value_fn=loss)
    return optax.apply_updates(params, updates), state

  def going(carry):
    _, state = carry
    count = optax.tree_utils.tree_get(state, 'count')
    grad_norm = optax.tree_utils.tree_norm(
        optax.tree_utils.tree_get(state, 'grad'))
    return (count == 0) | ((count < max_iters) & (grad_norm >= tol))

  params, state = jax.lax.while_loop(going, step,
                                     (params, solver.init(params)))
  return params, optax.tree_utils.tree_get(state, 'count')


def accuracy(params, x, y) -> float:
  predicted = np.asarray(jnp.argmax(_logits(params, jnp.asarray(x)), -1))
  return float(np.mean(predicted == np.asarray(y)))


def fast_linear_probe(features_train, labels_train, features_test,
                      labels_test, *, num_classes: int | None = None,
                      l2_grid: Sequence[float] = L2_GRID,
                      holdout_fraction: float = 0.1, max_iters: int = 500,
                      seed: int = 0) -> dict:
  """Test top-1 of a logistic-regression head on fixed features.

  Args:
    features_train: [N, D] features of the train split; labels_train: [N].
    features_test: [M, D]; labels_test: [M].
    num_classes: default: 1 + the largest label.
    l2_grid: L2 strengths; with more than one, the best on a held-out
      `holdout_fraction` of the train split (drawn with `seed`) is refit on
      the whole train split. Ties go to the stronger.
    holdout_fraction: see `l2_grid`.
    max_iters: L-BFGS iterations per fit.
    seed: the held-out part's draw.

  Returns:
    {'top1': test accuracy, 'train_top1', 'l2': the strength used,
     'holdout_top1': {l2: accuracy} (empty with one strength), 'iters'}.
  """
  x_train, x_test = standardize(np.asarray(features_train, np.float32),
                                np.asarray(features_test, np.float32))
  y_train = np.asarray(labels_train, np.int32)
  y_test = np.asarray(labels_test, np.int32)
  if num_classes is None:
    num_classes = int(max(y_train.max(), y_test.max())) + 1
  zeros = {'w': jnp.zeros((x_train.shape[1], num_classes), jnp.float32),
           'b': jnp.zeros((num_classes,), jnp.float32)}
  holdout = {}
  l2_grid = sorted(l2_grid, reverse=True)  # strongest first: warm starts
  if len(l2_grid) > 1:
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = max(1, int(round(holdout_fraction * len(x_train))))
    val, rest = order[:n_val], order[n_val:]
    x_fit, y_fit = jnp.asarray(x_train[rest]), jnp.asarray(y_train[rest])
    params = zeros
    for l2 in l2_grid:
      params, _ = fit(params, x_fit, y_fit, l2, max_iters=max_iters)
      holdout[l2] = accuracy(params, x_train[val], y_train[val])
    best = max(l2_grid, key=lambda l2: (holdout[l2], l2))
  else:
    best = l2_grid[0]
  x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)
  params, iters = fit(zeros, x_train, y_train, best, max_iters=max_iters)
  return {'top1': accuracy(params, x_test, y_test),
          'train_top1': accuracy(params, x_train, y_train), 'l2': best,
          'holdout_top1': holdout, 'iters': int(iters)}


def probe_features(config: ml_collections.ConfigDict,
                   knn_monitor: monitor.KnnMonitor, variables,
                   kind: str = 'inference') -> dict:
  """`fast_linear_probe` on features of `config.data`'s two splits.

  Features come from `knn_monitor.host_features` (kind 'inference': the
  backbone with BN running averages; 'pixels': the normalised images).
  """
  dc, pc = config.data, config.probe
  train_split = knn_monitor.host_features(variables, dc.train_split, kind)
  test_split = knn_monitor.host_features(variables, dc.eval_split, kind)
  return fast_linear_probe(
      *train_split, *test_split, num_classes=knn_monitor.num_classes,
      l2_grid=pc.l2_grid, holdout_fraction=pc.holdout_fraction,
      max_iters=pc.max_iters, seed=config.seed)


def _probe_key(config: ml_collections.ConfigDict) -> dict:
  pc = config.probe
  return {**monitor.data_key(config), 'l2_grid': list(pc.l2_grid),
          'holdout_fraction': pc.holdout_fraction,
          'max_iters': pc.max_iters, 'seed': config.seed}


def evaluate_checkpoint(config: ml_collections.ConfigDict,
                        workdir: str) -> dict:
  """Fast linear probe of the pretraining run named by `config.pretrained`.

  Writes `workdir/summary.json`: 'probe_top1', 'probe_l2' and, with
  `config.probe.raw_pixels` and small enough images, 'probe_raw_pixels_top1'
  (cached on disk like the kNN baselines).

  Raises:
    pretrained.PretrainedNotFound: `config.pretrained` names no checkpoint.
  """
  mesh = parallel.create_mesh()
  _, model, state = pretrained.load(config, workdir, mesh)  # checked first
  loop.take_workdir(workdir, config)
  knn_monitor = monitor.KnnMonitor(config, model, mesh)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  result = probe_features(config, knn_monitor, variables)
  summary = {'probe_top1': result['top1'], 'probe_l2': result['l2'],
             'probe_train_top1': result['train_top1'],
             'step': parallel.step_of(state),
             'pretrained': str(config.pretrained.workdir),
             'checkpoint': config.pretrained.checkpoint}
  shown = f'SimSiam {100 * result["top1"]:.2f}% (L2 {result["l2"]:g})'
  if config.probe.raw_pixels and (knn_monitor.pixel_dim <=
                                  config.knn.max_pixel_dim):
    raw = monitor.cached(
        config, 'probe_raw_pixels', _probe_key(config),
        lambda: probe_features(config, knn_monitor, None, 'pixels')['top1'])
    summary['probe_raw_pixels_top1'] = raw
    shown += f' | raw pixels {100 * raw:.2f}%'
  logging.info('Fast linear probe top-1 on %s: %s', config.data.eval_split,
               shown)
  if jax.process_index() == 0:
    workdir_lib.write_summary(workdir, summary)
  return summary
