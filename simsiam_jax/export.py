"""Writes a run's backbone as a PyTorch torchvision-ResNet state_dict.

  python -m simsiam_jax.export --workdir=DIR --out=resnet50.pth
  python -m simsiam_jax.export --workdir=DIR --out=checkpoint.pth.tar --layout=simsiam

'torchvision': load with `torchvision.models.resnet50().load_state_dict(sd,
strict=False)` (no fc). 'simsiam': the official code's checkpoint layout
({'state_dict': {'module.encoder.*'}}), which its main_lincls.py reads.
Needs PyTorch (`pip install torch`).
"""

import os

from absl import app
from absl import flags
from absl import logging
import numpy as np

from simsiam_jax import backbone as backbone_lib
from simsiam_jax import interop
from simsiam_jax import pretrained

FLAGS = flags.FLAGS


def define_flags():
  """Defines the CLI's flags, only when run as a program.

  So this module can be imported beside `simsiam_jax.main`, which owns
  --workdir.
  """
  flags.DEFINE_string('workdir', None, 'Workdir of a pretraining run.')
  flags.DEFINE_string('out', None, 'Output file (torch.save).')
  flags.DEFINE_enum('layout', 'torchvision', ['torchvision', 'simsiam'],
                    'Key layout of the written state_dict.')
  flags.mark_flags_as_required(['workdir', 'out'])


def _user_error(message: str):
  """One line and exit code 2, as simsiam_jax.main does."""
  logging.error('export: %s', message)
  raise SystemExit(2)


def main(argv):
  del argv
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise app.UsageError('Exporting needs PyTorch: pip install torch') from e
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(out_dir):
    _user_error(f'--out={FLAGS.out!r}: folder {out_dir} does not exist; '
                'create it or pass another --out.')
  try:
    backbone = backbone_lib.load_backbone(FLAGS.workdir)
  except pretrained.PretrainedNotFound as e:
    _user_error(f'--workdir={FLAGS.workdir!r}: {e}')
  sd = interop.backbone_to_torchvision(backbone.variables['params'],
                                       backbone.variables['batch_stats'])
  if FLAGS.layout == 'simsiam':
    sd = interop.to_simsiam_layout(sd)
    sd['state_dict'] = {k: torch.from_numpy(np.ascontiguousarray(v))
                        for k, v in sd['state_dict'].items()}
  else:
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
  torch.save(sd, FLAGS.out)
  logging.info('Wrote the backbone of step %d to %s (%s layout).',
               backbone.step,
               FLAGS.out, FLAGS.layout)


if __name__ == '__main__':
  define_flags()
  app.run(main)
