"""SimSiam self-supervised pretraining in JAX/Flax.

The public API (README, "Use as a library"); everything else stays
importable but may change:

  SimSiam, create_model(config.model)   the network: backbone, projector, predictor
  ResNet                                the backbone alone
  MLP, projector, predictor             the heads
  simsiam_loss, negative_cosine         the loss (stop-gradient inside)
  two_views(images, key, config)        two augmented views, as training makes them
  load_backbone(workdir) -> Backbone    a finished run's backbone; unpacks as
                                        (module, variables); .features(images)
  train_and_evaluate(config, workdir)   the main job (`simsiam-jax`)
  simsiam_jax.configs.NAME.get_config   the recipes of the checkout's configs/

Each name is imported on first use, so `import simsiam_jax` (and loading a
config) stays light.

Inside: config -> data source (data/sources.py) -> train step (train.py,
classify.py) -> loop (loop.py) -> checkpoints (checkpointing.py) and
evaluation (evaluation/). The train state lives in state.py, the workdir's
files in workdir.py; main.py is the command line. The README's Layout section
lists every module.
"""

import importlib

__version__ = '0.1.0'

_PUBLIC = {
    'SimSiam': 'simsiam_jax.models.simsiam',
    'create_model': 'simsiam_jax.models.simsiam',
    'ResNet': 'simsiam_jax.models.resnet',
    'MLP': 'simsiam_jax.models.heads',
    'projector': 'simsiam_jax.models.heads',
    'predictor': 'simsiam_jax.models.heads',
    'simsiam_loss': 'simsiam_jax.losses',
    'negative_cosine': 'simsiam_jax.losses',
    'two_views': 'simsiam_jax.data.device_augment',
    'Backbone': 'simsiam_jax.backbone',
    'load_backbone': 'simsiam_jax.backbone',
    'train_and_evaluate': 'simsiam_jax.train',
}

__all__ = sorted(_PUBLIC) + ['__version__']


def __getattr__(name):
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(_PUBLIC))
