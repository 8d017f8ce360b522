"""Shared settings of the linear-probe configs: the official protocol's shape.

Frozen backbone (BN in inference mode), a new linear layer, SGD momentum 0.9
without weight decay, cosine schedule; train views are RandomResizedCrop
(area 0.08-1) + flip only; evaluation as in pretraining's kNN monitor.
The backbone comes from `--config.pretrained.workdir`, with the model saved
in its checkpoint.
"""


def as_linear_probe(c, num_epochs: float, batch_size: int, base_lr: float):
  """Turns a pretraining config `c` (its data settings) into a linear probe."""
  c.mode = 'linear'
  c.num_epochs = num_epochs
  c.batch_size = batch_size
  c.optim.base_lr = base_lr        # lr = base_lr x batch_size / 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 0.0
  c.optim.schedule = 'cosine'
  c.optim.warmup_epochs = 0.0
  c.optim.fix_pred_lr = False      # no predictor here
  c.knn.every_epochs = -1          # the probe reports its own test accuracy
  aug = c.data.aug
  aug.crop_scale = (0.08, 1.0)
  aug.flip_prob = 0.5
  aug.jitter_prob = 0.0
  aug.grayscale_prob = 0.0
  aug.blur_prob = 0.0
  return c
