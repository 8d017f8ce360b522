"""The paper's CIFAR-10 recipe (appendix): ResNet-18 with the cifar stem,
2-layer projector, batch 512, lr 0.03 x B/256, wd 5e-4, 800 epochs.

  python -m simsiam_jax.main --config=configs/cifar10.py --workdir=DIR
"""

from simsiam_jax.configs import default


def get_config():
  c = default.get_config()
  c.batch_size = 512
  c.num_epochs = 800.0
  c.model.depth = 18
  c.model.stem = 'cifar'
  c.model.proj_layers = 2
  c.model.proj_hidden_dim = 2048
  c.model.proj_dim = 2048
  c.model.pred_hidden_dim = 512
  c.optim.base_lr = 0.03
  c.optim.weight_decay = 5e-4
  c.data.dataset = 'cifar10'
  c.data.image_size = 32
  c.data.cache = True
  c.data.aug.blur_prob = 0.0       # no blur for CIFAR (paper appendix)
  c.data.aug.mean = (0.4914, 0.4822, 0.4465)
  c.data.aug.std = (0.2470, 0.2435, 0.2616)
  return c
