"""Fine-tuning on 1 % of Fashion-MNIST's labels: SimSiam init vs from scratch.

The semi-supervised setting of the SimCLR / BYOL / SimSiam tables, at the
demo's size: the whole network (the demo's backbone and a new linear layer)
trains on a class-balanced 1 % of the train split, 60 labelled images per
class (600), picked by `classifier.label_seed` and listed in the run's
`label_subset.json`; test-split top-1 is `finetune_top1` in summary.json.
Two variants that differ only in the backbone's initial weights:

  # SimSiam init: fine-tunes the pretraining run in --config.pretrained.workdir
  python -m simsiam_jax.main --config=configs/fashion_mnist_finetune.py \
      --config.pretrained.workdir=workdirs/demo --workdir=workdirs/demo_ft1pct
  # the baseline: the same network from random weights (no pretraining run)
  python -m simsiam_jax.main --config=configs/fashion_mnist_finetune.py:scratch \
      --workdir=workdirs/scratch_ft1pct

Another subset: --config.classifier.label_seed=1; another fraction:
--config.classifier.label_fraction=0.1. The network is that of
`configs/fashion_mnist.py` (the scratch variant builds it from there; the
SimSiam variant from the checkpoint, and warns if the two differ).

Schedule: 900 steps of batch 64, counted in steps rather than epochs: 600
examples make 9 steps an epoch (about 100 epochs here), and a fixed number of
steps keeps the compute, and the comparison, the same at any label fraction
(at 0.1 it is 10 epochs of 6,000). `--config.num_train_steps=-1
--config.num_epochs=N` counts epochs of the subset instead. Both variants
share every setting: SGD momentum 0.9, weight decay 5e-4, cosine from lr
0.4 x 64/256 = 0.1 for the head and the backbone alike (one lr, as SimCLR
fine-tunes, so that only the initialisation differs; not tuned), BatchNorm in
training mode, RandomResizedCrop(28, 0.08-1) + flip. About 2.5 minutes each
on 2 CPU cores: 0.09 s a step (measured on 100 steps of the scratch variant)
plus about a minute of start-up, compilation and the test split.
"""

from simsiam_jax.configs import fashion_mnist
from simsiam_jax.configs import linear_common

VARIANTS = ('simsiam', 'scratch')


def get_config(variant: str = 'simsiam'):
  if variant not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}.')
  c = linear_common.as_linear_probe(fashion_mnist.get_config('cpu'),
                                    num_epochs=100.0, batch_size=64,
                                    base_lr=0.4)
  c.mode = 'finetune'
  c.num_train_steps = 900
  c.optim.weight_decay = 5e-4
  c.classifier.backbone_base_lr = -1.0  # = optim.base_lr
  c.classifier.label_fraction = 0.01
  c.classifier.label_seed = 0
  c.classifier.eval_every_epochs = 0
  # The classifier trains through the host pipeline (crop + flip, then
  # normalise); the pretraining config may keep its data on the devices.
  c.data.augment_on = 'host'
  c.data.resident = False
  c.data.cache = True              # the 600 decoded images, read once
  c.log_every_steps = 50
  c.checkpoint_every_steps = 300
  if variant == 'scratch':
    c.classifier.from_scratch = True
  return c
