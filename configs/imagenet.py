"""The paper's ImageNet recipe: ResNet-50, batch 512, 100 epochs (official code).

  python -m simsiam_jax.main --config=configs/imagenet.py --workdir=DIR
  python -m simsiam_jax.main --config=configs/imagenet.py:tpu_v4_32 --workdir=DIR
  python -m simsiam_jax.main --config=configs/imagenet.py:gpu8 --workdir=DIR

Topology variants set the global batch (per-device batch x devices), bf16
compute (float32 parameters, optimiser state and BN statistics) and input
threads; the lr follows the global batch (lr = 0.05 x B / 256).
"""

from simsiam_jax.configs import default

# variant: (devices, per-device batch, tf.data threads per host)
TOPOLOGIES = {
    'tpu_v4_32': (16, 64, 0),   # 4 hosts x 4 chips; batch 1024 (paper: 68.0 %)
    'tpu_v4_8': (4, 128, 0),    # 1 host x 4 chips; batch 512
    'gpu8': (8, 64, 32),        # one 8-GPU node, the official 8 x 64 = 512
    'gpu1': (1, 256, 16),       # one GPU
}


def get_config(variant: str = 'default'):
  c = default.get_config()
  c.batch_size = 512
  c.num_epochs = 100.0
  c.model.depth = 50
  c.model.stem = 'imagenet'
  c.model.proj_layers = 3
  c.model.proj_hidden_dim = 2048
  c.model.proj_dim = 2048
  c.model.pred_hidden_dim = 512
  c.optim.base_lr = 0.05
  c.optim.weight_decay = 1e-4
  c.optim.fix_pred_lr = True
  c.data.dataset = 'imagenet2012'
  c.data.manual_dir = ''           # folder with ILSVRC2012_img_{train,val}.tar
  c.data.decode_jpeg_crop = True   # decode only the crop window
  c.data.image_size = 224
  c.data.eval_split = 'validation'
  c.data.aug.blur_prob = 0.5
  c.data.aug.blur_kernel_size = 23
  if variant == 'default':
    return c
  if variant not in TOPOLOGIES:
    raise ValueError(f'variant must be default or one of {sorted(TOPOLOGIES)}, '
                     f'got {variant!r}.')
  devices, per_device, workers = TOPOLOGIES[variant]
  c.batch_size = devices * per_device
  c.model.dtype = 'bfloat16'
  c.data.num_workers = workers
  c.eval.batch_size = devices * 128
  return c
