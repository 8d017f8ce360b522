"""Writes a run's backbone as a PyTorch torchvision-ResNet state_dict.

  python -m simsiam_jax.export --workdir=DIR --out=resnet50.pth
  python -m simsiam_jax.export --workdir=DIR --out=checkpoint.pth.tar --layout=simsiam

'torchvision': load with `torchvision.models.resnet50().load_state_dict(sd,
strict=False)` (no fc). 'simsiam': the official code's checkpoint layout
({'state_dict': {'module.encoder.*'}}), which its main_lincls.py reads.
Needs PyTorch (`pip install torch`).
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from simsiam_jax import checkpointing
from simsiam_jax import interop
from simsiam_jax import optim
from simsiam_jax import parallel
from simsiam_jax import train
from simsiam_jax.models import simsiam

FLAGS = flags.FLAGS


def define_flags():
  """Defines the CLI's flags, only when run as a program.

  So `load_backbone` can be imported beside `simsiam_jax.main`, which owns
  --workdir.
  """
  flags.DEFINE_string('workdir', None, 'Workdir of a pretraining run.')
  flags.DEFINE_string('out', None, 'Output file (torch.save).')
  flags.DEFINE_enum('layout', 'torchvision', ['torchvision', 'simsiam'],
                    'Key layout of the written state_dict.')
  flags.mark_flags_as_required(['workdir', 'out'])


def load_backbone(workdir: str):
  """(params, batch_stats) of the backbone in the latest checkpoint of `workdir`."""
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  mesh = parallel.create_mesh()
  model = simsiam.create_model(config.model)
  # The optimiser's structure, not its numbers, shapes the state.
  tx, _ = optim.create_optimizer(config, 1, 10**9)
  size = config.data.image_size
  abstract = train.abstract_train_state(
      model, tx, jax.random.key(0), (size, size, config.data.channels), mesh)
  state = checkpointing.Checkpointer(workdir, config).restore(abstract)
  if state is None:
    raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints.')
  return (jax.device_get(state.params['backbone']),
          jax.device_get(state.batch_stats['backbone']), int(state.step))


def main(argv):
  del argv
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise app.UsageError('Exporting needs PyTorch: pip install torch') from e
  params, stats, step = load_backbone(FLAGS.workdir)
  sd = interop.backbone_to_torchvision(params, stats)
  if FLAGS.layout == 'simsiam':
    sd = interop.to_simsiam_layout(sd)
    sd['state_dict'] = {k: torch.from_numpy(np.ascontiguousarray(v))
                        for k, v in sd['state_dict'].items()}
  else:
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
  torch.save(sd, FLAGS.out)
  logging.info('Wrote the backbone of step %d to %s (%s layout).', step,
               FLAGS.out, FLAGS.layout)


if __name__ == '__main__':
  define_flags()
  app.run(main)
