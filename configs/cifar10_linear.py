"""Linear probe on CIFAR-10 as reproductions run it: SGD lr 30, batch 256,
100 epochs, cosine, no weight decay; RandomResizedCrop(32, 0.08-1) + flip.

  python -m simsiam_jax.main --config=configs/cifar10_linear.py \
      --config.pretrained.workdir=PRETRAIN_DIR --workdir=PROBE_DIR
"""

from simsiam_jax.configs import cifar10
from simsiam_jax.configs import linear_common


def get_config():
  c = linear_common.as_linear_probe(cifar10.get_config(), num_epochs=100.0,
                                    batch_size=256, base_lr=30.0)
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  return c
