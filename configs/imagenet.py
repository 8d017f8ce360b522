"""The paper's ImageNet recipe: ResNet-50, batch 512, 100 epochs (official code).

  python -m simsiam_jax.main --config=configs/imagenet.py --workdir=DIR
"""

from configs import default


def get_config():
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
  return c
