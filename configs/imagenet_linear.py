"""Linear probe on ImageNet, the official protocol (main_lincls.py --lars).

LARS (trust 0.001) over SGD momentum 0.9, weight decay 0, batch 4096,
lr 0.1 x B/256 = 1.6, cosine, 90 epochs; train RandomResizedCrop(224, area
0.08-1) + flip; eval resize 256, centre crop 224. `:paper` uses the paper's
base lr 0.02 (its TPU run).

  python -m simsiam_jax.main --config=configs/imagenet_linear.py \
      --config.pretrained.workdir=PRETRAIN_DIR --workdir=PROBE_DIR
"""

from simsiam_jax.configs import imagenet
from simsiam_jax.configs import linear_common


def get_config(variant: str = 'official'):
  if variant not in ('official', 'paper'):
    raise ValueError(f"variant must be 'official' or 'paper', got {variant!r}.")
  c = linear_common.as_linear_probe(
      imagenet.get_config(), num_epochs=90.0, batch_size=4096,
      base_lr=0.1 if variant == 'official' else 0.02)
  c.optim.optimizer = 'lars'
  c.optim.lars_trust_coefficient = 0.001
  c.eval.batch_size = 1024         # evaluation batch
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  return c
