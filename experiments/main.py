"""The onestep_jax command line: train, sample or evaluate a configured run.

  python experiments/main.py --config=configs/teacher_toy2d.py:ring8 --workdir=runs/ring8 \
      [--mode=train|sample|evaluate] [--config.train.num_steps=2000 ...]

Running the same command again resumes from the last checkpoint in the workdir.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'configs/<file>.py[:<variant>]', lock_config=True)
flags.DEFINE_string('workdir', None, 'directory for checkpoints, metrics and samples')
flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'evaluate'],
                  'train (then evaluate), sample from, or evaluate the latest checkpoint')
flags.DEFINE_bool('progress', True, 'show a progress bar')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from onestep_jax.experiment.runner import run
  try:
    metrics = run(flags.FLAGS.config, flags.FLAGS.workdir, mode=flags.FLAGS.mode,
                  progress=flags.FLAGS.progress)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for name in sorted(metrics):
    print(f'{name:40s} {metrics[name]:.6g}')
  return 0


if __name__ == '__main__':
  app.run(main)
