"""Fine-tuning on CIFAR-10: the whole network trains, the backbone at its own lr.

Our settings for the seed's CIFAR-10 fine-tuning (200 epochs): SGD momentum
0.9, weight decay 5e-4, batch 256, cosine; the new head at lr 0.1 x B/256,
the pretrained backbone at 0.01 x B/256; BatchNorm in training mode;
RandomResizedCrop(32, 0.08-1) + flip.

  python -m simsiam_jax.main --config=configs/cifar10_finetune.py \
      --config.pretrained.workdir=PRETRAIN_DIR --workdir=FINETUNE_DIR
"""

from simsiam_jax.configs import cifar10
from simsiam_jax.configs import linear_common


def get_config():
  c = linear_common.as_linear_probe(cifar10.get_config(), num_epochs=200.0,
                                    batch_size=256, base_lr=0.1)
  c.mode = 'finetune'
  c.optim.weight_decay = 5e-4
  c.classifier.backbone_base_lr = 0.01
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  return c
