"""Linear probe on Fashion-MNIST (SGD, the CIFAR-10 reproduction protocol).

Default: 10 epochs at base lr 3, about 6 minutes on a 2-core CPU for the
main command's network; `:full` runs the 100-epoch protocol at lr 30.

  python -m simsiam_jax.main --config=configs/fashion_mnist_linear.py \
      --config.pretrained.workdir=workdirs/demo --workdir=workdirs/demo_linear
"""

from simsiam_jax.configs import fashion_mnist
from simsiam_jax.configs import linear_common


def get_config(variant: str = 'cpu'):
  if variant not in ('cpu', 'full'):
    raise ValueError(f"variant must be 'cpu' or 'full', got {variant!r}.")
  # The cpu variant's small network wants a lower lr: at 30 its loss blows
  # up (about 25 after 150 steps); 3 trains (70 % test top-1 after 1 epoch).
  c = linear_common.as_linear_probe(
      fashion_mnist.get_config(variant), batch_size=256,
      base_lr=3.0 if variant == 'cpu' else 30.0,
      num_epochs=10.0 if variant == 'cpu' else 100.0)
  # The classifier's training data come through the host pipeline
  # (tf.data augmentation), not the resident set pretraining uses.
  c.data.resident = False
  c.data.augment_on = 'host'
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  return c
