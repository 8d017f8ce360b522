"""Every config field, with its default (the paper's ImageNet recipe).

Experiment configs start from `get_config()` here and change what differs;
the returned ConfigDict is locked by the CLI, so a misspelt override is an
error. Durations are named by unit and turned into steps in one place
(`data/sources.num_steps`).
"""

import ml_collections

# Model fields added after runs were saved without them, with the value
# that builds the network those runs built: a saved config that lacks one
# builds with this value, and its checkpoint matches a run that sets it.
MODEL_FIELDS_ADDED_LATER = {'stage_widths': (), 'conv_impl': 'auto',
                            'head_init': 'flax', 'prototypes': 0}


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = 'pretrain'              # 'pretrain', 'knn_eval', 'linear' (frozen probe), 'finetune', 'fast_probe', 'prepare' (the data only)
  c.seed = 0                       # root of every PRNG key and data order
  c.batch_size = 512               # GLOBAL batch, over all devices and hosts
  c.num_epochs = 100.0             # run length in epochs (ignored if num_train_steps > 0)
  c.num_train_steps = -1           # run length in steps; -1: from num_epochs
  c.log_every_steps = 100          # log/TensorBoard interval (metrics averaged over it)
  c.checkpoint_every_steps = 1000  # checkpoint interval (also at the end and on preemption)
  c.report_every_secs = 60.0       # steps/s and ETA to TensorBoard (clu ReportProgress)
  c.resume_policy = 'refuse'       # a workdir's run resumed with other settings: 'refuse' or 'allow_changes'

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep = 3            # newest checkpoints kept
  c.checkpoint.async_save = True   # save in the background while training goes on
  c.checkpoint.max_param_norm_growth = 1000.0  # a state whose param norm grew more than this x is not saved

  c.model = ml_collections.ConfigDict()
  c.model.depth = 50               # ResNet depth: 18, 34, 50, 101, 152
  c.model.width = 64               # channels of the first stage (64 = standard)
  c.model.stage_sizes = ()         # blocks per stage; () = the standard ones for depth
  c.model.stage_widths = ()        # channels per stage; () = width, 2x, 4x, 8x (standard)
  c.model.stem = 'imagenet'        # 'imagenet' (7x7/2 + max-pool) or 'cifar' (3x3, no pool)
  c.model.cifar_stem_stride = 1    # stride of the cifar stem's conv
  c.model.zero_init_residual = True  # last BN scale of each block starts at 0 (official code)
  c.model.proj_layers = 3          # projector depth: 3 (ImageNet) or 2 (CIFAR)
  c.model.proj_hidden_dim = 2048   # projector hidden width
  c.model.proj_dim = 2048          # projector output width (= predictor in/out)
  c.model.pred_hidden_dim = 512    # predictor bottleneck width
  c.model.predictor = 'mlp'        # 'mlp', 'none' or 'fixed_random' (paper Table 1)
  c.model.head_bn = 'default'      # BN in MLPs: 'none', 'hidden', 'default', 'all' (Table 3)
  c.model.head_init = 'torch'      # MLP Dense init: 'torch' (nn.Linear, official code) or 'flax' (lecun normal, zero bias)
  c.model.prototypes = 0           # SwAV's prototypes (3000 for ImageNet); 0: none
  c.model.conv_impl = 'auto'       # 'auto' (im2col where XLA:CPU would loop), 'xla', 'im2col'
  c.model.dtype = 'float32'        # compute dtype: 'float32' or 'bfloat16'
  c.model.param_dtype = 'float32'  # parameter (and BN statistics) dtype

  # The method: 'simsiam', or a comparison method of the paper (methods/):
  # 'simclr', 'moco_v2', 'byol', 'swav', 'barlow_twins', 'vicreg'.
  # Those without a predictor need model.predictor='none'; SimCLR and SwAV
  # take one as the paper's Section 6 hybrids. SwAV needs model.prototypes.
  c.method = 'simsiam'
  c.simclr = ml_collections.ConfigDict()
  c.simclr.temperature = 0.5       # NT-Xent temperature (SimCLR: 0.5 for CIFAR-10, 0.1 for ImageNet)
  c.simclr.stop_gradient = False   # hybrid (SimSiam Sec. 6): no gradient through the candidates z
  c.barlow_twins = ml_collections.ConfigDict()
  c.barlow_twins.lambda_offdiag = 0.0051  # off-diagonal weight (official --lambd)
  c.vicreg = ml_collections.ConfigDict()
  c.vicreg.sim_weight = 25.0       # invariance weight (official --sim-coeff)
  c.vicreg.var_weight = 25.0       # variance weight (official --std-coeff)
  c.vicreg.cov_weight = 1.0        # covariance weight (official --cov-coeff)
  c.byol = ml_collections.ConfigDict()
  c.byol.tau_base = 0.996          # target momentum, raised to 1 along a cosine (BYOL Sec. 3.2)
  c.byol.tau_schedule = 'cosine'   # 'cosine' (BYOL) or 'constant' (tau_base=0: SimSiam with BYOL's loss)
  c.swav = ml_collections.ConfigDict()
  c.swav.temperature = 0.1         # softmax temperature of the predictions (official --temperature)
  c.swav.epsilon = 0.05            # Sinkhorn regularisation (official --epsilon)
  c.swav.sinkhorn_iterations = 3   # Sinkhorn-Knopp iterations (official --sinkhorn_iterations)
  c.swav.freeze_prototypes_epochs = 1.0  # prototypes get no gradient this long (official: 1 epoch's iterations)
  c.moco = ml_collections.ConfigDict()
  c.moco.temperature = 0.2         # InfoNCE temperature (MoCo v2)
  c.moco.momentum = 0.999          # key encoder momentum, constant (MoCo --moco-m)
  c.moco.queue_size = 65536        # keys in the queue (MoCo --moco-k); a multiple of 2x the batch

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

  c.collapse = ml_collections.ConfigDict()
  c.collapse.threshold = 0.2       # collapse_std below this counts as collapsing (healthy: ~1)
  c.collapse.patience_steps = 500  # warn after this many steps under the threshold
  c.collapse.min_rank = 0.0        # effective rank of the batch's z below this counts as collapsing (0: off)
  c.collapse.stop = False          # also stop the run, naming the last healthy checkpoint

  c.knn = ml_collections.ConfigDict()
  c.knn.every_epochs = 0           # kNN monitor interval in epochs; 0: only at the end; -1: never
  c.knn.at_start = False           # also score the randomly initialised network
  c.knn.k = 200                    # neighbours
  c.knn.temperature = 0.1          # weights exp(sim / T) (0.1 seed monitor, 0.2 paper)
  c.knn.query_batch = 1024         # test features scored against the bank at a time
  c.knn.baselines = True           # also score raw pixels and the random init (once, cached)
  c.knn.max_pixel_dim = 16384      # raw-pixel baselines only up to this many values per image
  c.knn.rank_images = 1024         # clean train images whose features' effective rank is measured with each kNN (0: off)
  c.knn.cache_dir = ''             # baseline cache; '' = data.data_dir/simsiam_jax or ~/.cache/simsiam_jax
  c.knn.per_class = False          # knn_eval: also top-1 per class, beside the raw pixels' ('knn_per_class', 'knn_per_class_raw_pixels')

  # Every evaluation's forward passes (kNN features, fast probe, classifier tests).
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 512          # GLOBAL batch of evaluation images

  # The eval modes ('knn_eval', 'linear', 'finetune') load a pretraining run.
  c.pretrained = ml_collections.ConfigDict()
  c.pretrained.workdir = ''        # the pretraining run's --workdir
  c.pretrained.checkpoint = 'latest'  # 'latest' or 'best' (by kNN top-1)
  c.pretrained.step = -1           # a given step of its checkpoints; -1: as above

  # 'fast_probe' mode: logistic regression on frozen features (evaluation/probe.py).
  c.probe = ml_collections.ConfigDict()
  c.probe.l2_grid = (1e-5, 1e-4, 1e-3, 1e-2)  # L2 strengths tried; picked on held-out train data
  c.probe.holdout_fraction = 0.1   # share of the train split that picks the L2 strength
  c.probe.max_iters = 500          # L-BFGS iterations per fit
  c.probe.raw_pixels = True        # also probe the raw pixels (cached like the kNN baselines)

  c.classifier = ml_collections.ConfigDict()  # 'linear' and 'finetune' modes
  c.classifier.head_init_std = 0.01  # new linear layer: N(0, std) weights, zero bias
  c.classifier.backbone_base_lr = -1.0  # finetune: backbone lr x B/256; -1: optim.base_lr
  c.classifier.eval_every_epochs = 0  # test-split accuracy interval; 0: only at the end
  c.classifier.label_fraction = 1.0  # train on this class-balanced fraction of the labels (0.01: 1 %)
  c.classifier.label_seed = 0      # picks that subset (NumPy, from the labels); fixed for the run
  c.classifier.from_scratch = False  # finetune a random-init backbone of config.model (no pretrained.workdir)

  c.data = ml_collections.ConfigDict()
  c.data.dataset = 'synthetic'     # 'synthetic' (in memory), 'fashion_mnist_debian', or a TFDS name
  c.data.data_dir = ''             # TFDS data_dir; '' = TFDS default (~/tensorflow_datasets)
  c.data.manual_dir = ''           # files for manual-download datasets (imagenet2012)
  c.data.allow_download = False    # let TFDS download (only tried if the network answers)
  c.data.prepare_wait_s = 43200    # other processes wait this long for process 0 to prepare the data
  c.data.train_split = 'train'     # split to pretrain on
  c.data.eval_split = 'test'       # split the kNN monitor / probe evaluates on
  c.data.image_size = 224          # training crop size
  c.data.channels = 3              # image channels fed to the network (grayscale is repeated)
  c.data.decode_jpeg_crop = False  # data are JPEG bytes: fused decode-and-crop (ImageNet)
  c.data.eval_crop_fraction = 0.875  # ImageNet eval: resize to size/0.875 (256), centre crop
  c.data.cache = False             # cache decoded examples in memory (small data sets)
  c.data.shuffle_buffer = 16384    # examples in the shuffle buffer
  c.data.num_workers = 0           # tf.data threads; 0 = TensorFlow's default
  c.data.synthetic_num_examples = 1024  # size of the synthetic train split
  c.data.augment_on = 'host'       # 'host' (tf.data) or 'device' (in the train step; host ships uint8)
  c.data.resident = False          # keep the uint8 train split on the devices (small sets; needs 'device')

  c.data.aug = ml_collections.ConfigDict()  # the two-view recipe (ImageNet values)
  c.data.aug.crop_scale = (0.2, 1.0)       # RandomResizedCrop area fraction
  c.data.aug.crop_ratio = (3 / 4, 4 / 3)   # RandomResizedCrop aspect ratio (log-uniform)
  c.data.aug.crop_size = 0                 # training views' size in px; 0: data.image_size (eval stays at image_size)
  c.data.aug.flip_prob = 0.5               # horizontal flip
  c.data.aug.jitter_prob = 0.8             # ColorJitter probability
  c.data.aug.brightness = 0.4              # factor U(1-b, 1+b), multiplicative
  c.data.aug.contrast = 0.4                # factor U(1-c, 1+c)
  c.data.aug.saturation = 0.4              # factor U(1-s, 1+s)
  c.data.aug.hue = 0.1                     # shift U(-h, h) of a turn
  c.data.aug.grayscale_prob = 0.2          # RandomGrayscale
  c.data.aug.blur_prob = 0.5               # Gaussian blur (0 turns it off)
  c.data.aug.blur_sigma_min = 0.1          # blur sigma range
  c.data.aug.blur_sigma_max = 2.0
  c.data.aug.blur_kernel_size = 23         # odd; about 10% of the image size
  c.data.aug.mean = (0.485, 0.456, 0.406)  # normalisation (ImageNet statistics)
  c.data.aug.std = (0.229, 0.224, 0.225)
  return c
