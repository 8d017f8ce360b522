"""The run's random streams, all drawn from `config.seed`, by name.

JAX keys (in jitted code):
  'init'           parameter initialisation (and a probe's new head)
  'resident_order' the resident data's per-epoch permutation, per device
  'device_augment' the resident data's crops and augmentation, per step
  'host_crops'     the augmentation of host crops done on the device, per step

Host-side streams keep their own frameworks' seeding: tf.data views are
stateless functions of (seed, process, example index) (tfds_pipeline.py),
the synthetic source's NumPy draws of (seed, process, step) (synthetic.py).
Changing a number here changes every run's result.
"""

import jax

_STREAMS = {'init': None, 'resident_order': 1, 'device_augment': 2,
            'host_crops': 3}


def key(seed: int, stream: str) -> jax.Array:
  """The root key of `stream` for `seed`."""
  if stream not in _STREAMS:
    raise KeyError(f'No random stream {stream!r}; streams: {sorted(_STREAMS)}.')
  root = jax.random.key(seed)
  number = _STREAMS[stream]
  return root if number is None else jax.random.fold_in(root, number)
