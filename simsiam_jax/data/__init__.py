"""Training and evaluation data: one entry, `sources.make_train_source`.

  sources.py         what a mode reads: TrainSource, eval batches, label subsets
  spec.py            what config.data means (view size, input shape, checks)
  errors.py          the data errors
  tfds_pipeline.py   tf.data over TFDS (the only TensorFlow import, with
                     augment.py and fashion_mnist.py)
  augment.py         the augmentations as tf ops
  device_augment.py  the same in JAX; the in-step function for host crops
  resident.py        data kept on the devices, drawn and augmented in the step
  synthetic.py       in-memory data for tests and smoke runs
  idx_files.py       Debian's Fashion-MNIST IDX files (no TensorFlow)
  fashion_mnist.py   the TFDS builder over them

Imports run one way: sources -> resident/device_augment/spec/synthetic ->
errors; tfds_pipeline only when a TFDS data set is read.
"""
