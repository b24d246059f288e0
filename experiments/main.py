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
flags.DEFINE_bool('distributed', False, 'multi-host: call jax.distributed.initialize() first '
                  '(TPU pods and SLURM are detected; else set JAX_COORDINATOR_ADDRESS etc.)')
flags.mark_flags_as_required(['config', 'workdir'])


def preflight(argv) -> None:
  """Fails early, without a traceback, on a missing config file, variant or field."""
  from onestep_jax.experiment.overrides import load_config_file, unknown_override
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if spec is None:
    return
  try:
    problem = unknown_override(load_config_file(spec), argv)
  except (ValueError, FileNotFoundError) as e:
    problem = str(e)
  if problem:
    print(f'error: {problem}', file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if flags.FLAGS.distributed:
    import jax
    jax.distributed.initialize()
  from onestep_jax.experiment.runner import run
  try:
    metrics = run(flags.FLAGS.config, flags.FLAGS.workdir, mode=flags.FLAGS.mode,
                  progress=flags.FLAGS.progress)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for name in sorted(metrics):
    print(f'{name:40s} {metrics[name]:.6g}')
  return 0


if __name__ == '__main__':
  preflight(sys.argv)
  app.run(main)
