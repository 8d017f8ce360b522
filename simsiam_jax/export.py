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
import jax
import numpy as np

from simsiam_jax import interop
from simsiam_jax import parallel
from simsiam_jax import pretrained

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
  """(params, batch_stats, step) of the backbone in the latest checkpoint of `workdir`.

  Opened read-only (`pretrained.read_run`): nothing in `workdir` is created,
  changed or cleaned.
  """
  _, _, state = pretrained.read_run(workdir, parallel.create_mesh())
  return (jax.device_get(state.params['backbone']),
          jax.device_get(state.batch_stats['backbone']), int(state.step))


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
    params, stats, step = load_backbone(FLAGS.workdir)
  except pretrained.PretrainedNotFound as e:
    _user_error(f'--workdir={FLAGS.workdir!r}: {e}')
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
