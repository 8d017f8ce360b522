"""A tiny SimSiam for tests and smoke runs: seconds on a CPU.

  python -m simsiam_jax.main --config=configs/tiny.py --workdir=DIR
"""

from simsiam_jax.configs import default


def get_config():
  c = default.get_config()
  c.batch_size = 16
  c.num_epochs = 1.0
  c.num_train_steps = 4
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.model.depth = 18
  c.model.width = 8
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.stem = 'cifar'
  c.model.proj_layers = 2
  c.model.proj_hidden_dim = 32
  c.model.proj_dim = 32
  c.model.pred_hidden_dim = 8
  c.optim.base_lr = 0.05
  c.knn.every_epochs = -1          # no kNN in the smallest runs (tests turn it on)
  c.data.dataset = 'synthetic'
  c.data.image_size = 16
  c.data.synthetic_num_examples = 256
  return c
