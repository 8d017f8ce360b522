"""Every config field, with its default (the paper's ImageNet recipe).

Experiment configs start from `get_config()` here and change what differs;
the returned ConfigDict is locked by the CLI, so a misspelt override is an
error. Durations are named by unit and turned into steps in one place
(`train.num_steps`).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = 'pretrain'              # what main runs: 'pretrain'
  c.seed = 0                       # root of every PRNG key and data order
  c.batch_size = 512               # GLOBAL batch, over all devices and hosts
  c.num_epochs = 100.0             # run length in epochs (ignored if num_train_steps > 0)
  c.num_train_steps = -1           # run length in steps; -1: from num_epochs
  c.log_every_steps = 100          # log/TensorBoard interval (metrics averaged over it)
  c.checkpoint_every_steps = 1000  # checkpoint interval

  c.model = ml_collections.ConfigDict()
  c.model.depth = 50               # ResNet depth: 18, 34, 50, 101, 152
  c.model.width = 64               # channels of the first stage (64 = standard)
  c.model.stage_sizes = ()         # blocks per stage; () = the standard ones for depth
  c.model.stem = 'imagenet'        # 'imagenet' (7x7/2 + max-pool) or 'cifar' (3x3, no pool)
  c.model.cifar_stem_stride = 1    # stride of the cifar stem's conv
  c.model.zero_init_residual = True  # last BN scale of each block starts at 0 (official code)
  c.model.proj_layers = 3          # projector depth: 3 (ImageNet) or 2 (CIFAR)
  c.model.proj_hidden_dim = 2048   # projector hidden width
  c.model.proj_dim = 2048          # projector output width (= predictor in/out)
  c.model.pred_hidden_dim = 512    # predictor bottleneck width
  c.model.predictor = 'mlp'        # 'mlp', 'none' or 'fixed_random' (paper Table 1)
  c.model.head_bn = 'default'      # BN in MLPs: 'none', 'hidden', 'default', 'all' (Table 3)
  c.model.dtype = 'float32'        # compute dtype: 'float32' or 'bfloat16'
  c.model.param_dtype = 'float32'  # parameter (and BN statistics) dtype

  c.loss = ml_collections.ConfigDict()
  c.loss.stop_gradient = True      # stop-gradient on the targets (False collapses)
  c.loss.symmetric = True          # 0.5 D(p1,z2) + 0.5 D(p2,z1); False: D(p1,z2) only
  c.loss.similarity = 'cosine'     # 'cosine' or 'cross_entropy' (Table 4)

  c.optim = ml_collections.ConfigDict()
  c.optim.optimizer = 'sgd'        # 'sgd' or 'lars'
  c.optim.base_lr = 0.05           # lr = base_lr * batch_size / 256
  c.optim.momentum = 0.9           # SGD / LARS momentum
  c.optim.weight_decay = 1e-4      # L2 weight decay
  c.optim.weight_decay_mask = 'all'  # 'all' (official) or 'no_bn_bias'
  c.optim.schedule = 'cosine'      # 'cosine' (per step), 'cosine_epoch' (official), 'constant'
  c.optim.warmup_epochs = 0.0      # linear warm-up from 0
  c.optim.fix_pred_lr = True       # predictor keeps the initial lr (official --fix-pred-lr)
  c.optim.lars_trust_coefficient = 0.001  # LARS only
  c.optim.lars_eps = 0.0           # LARS only

  c.data = ml_collections.ConfigDict()
  c.data.dataset = 'synthetic'     # 'synthetic' (in memory)
  c.data.image_size = 224          # training crop size
  c.data.channels = 3              # image channels fed to the network
  c.data.synthetic_num_examples = 1024  # size of the synthetic train split
  return c
