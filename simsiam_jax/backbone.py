"""A finished run's backbone: its Flax module, its variables, frozen features.

  module, variables = simsiam_jax.load_backbone('workdirs/demo')
  h = module.apply(variables, x, train=False)             # [B, D]
  h = simsiam_jax.load_backbone('workdirs/demo').features(uint8_images)

Opened read-only: nothing in the workdir is created, changed or cleaned.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simsiam_jax import parallel
from simsiam_jax import pretrained
from simsiam_jax.data import device_augment
from simsiam_jax.models import resnet


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A pretrained ResNet; unpacks as (module, variables).

  Attributes:
    module: the `ResNet` (unbound): `module.apply(variables, x, train=False)`.
    variables: {'params', 'batch_stats'} as NumPy arrays on the host.
    config: the run's own config (from its checkpoint).
    step: the checkpoint's step.
  """
  module: resnet.ResNet
  variables: dict
  config: ml_collections.ConfigDict
  step: int

  def __iter__(self):
    return iter((self.module, self.variables))

  @functools.cached_property
  def _apply(self):
    aug = self.config.data.aug

    def apply(variables, images):
      x = device_augment.network_input(images, aug)
      return self.module.apply(variables, x, train=False)

    return jax.jit(apply)

  def features(self, images, batch_size: int = 512) -> np.ndarray:
    """Pooled features [N, D] float32 of images [N, H, W, C], BN frozen.

    uint8 pixels are scaled and normalised as the run's training did (grey
    images repeated to its channels); float images are taken as already
    normalised. Runs in batches of `batch_size`, the last one padded, so
    one compilation serves any N.
    """
    images = np.asarray(images)
    out = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      pad = batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                                chunk.dtype)])
      h = self._apply(self.variables, jnp.asarray(chunk))
      out.append(np.asarray(h[:batch_size - pad], np.float32))
    return np.concatenate(out)


def load_backbone(workdir: str, step: int | None = None) -> Backbone:
  """The backbone of a pretraining run's latest checkpoint (or of `step`).

  Raises:
    pretrained.PretrainedNotFound: no readable checkpoint there.
  """
  config, model, state = pretrained.read_run(workdir, parallel.create_mesh(),
                                             step=step)
  variables = {'params': state.params['backbone'],
               'batch_stats': state.batch_stats['backbone']}
  return Backbone(model.backbone, jax.device_get(variables), config,
                  int(parallel.step_of(state)))
