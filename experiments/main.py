"""The onestep_jax command line: train, sample or evaluate a configured run.

  python experiments/main.py --config=configs/teacher_toy2d.py:ring8 --workdir=runs/ring8 \
      [--mode=train|sample|evaluate] [--config.train.num_steps=2000 ...]

Running the same command again resumes from the last checkpoint in the workdir. On image data,
--config.eval.feature_extractor=<pt_inception weights .npz> makes the evaluation the
paper-comparable FID/IS/precision/recall of eval.inception.num_samples samples per model (it too
resumes); reference statistics come from experiments/fid_reference.py or the training data.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from onestep_jax.experiment.allocator import reexec_with_tcmalloc
from onestep_jax.experiment.cli import define_distributed_flags, initialize_distributed

config_flags.DEFINE_config_file('config', None, 'configs/<file>.py[:<variant>]', lock_config=True)
flags.DEFINE_string('workdir', None, 'directory for checkpoints, metrics and samples')
flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'evaluate'],
                  'train (then evaluate), sample from, or evaluate the latest checkpoint')
flags.DEFINE_bool('progress', True, 'show a progress bar')
define_distributed_flags()
flags.mark_flags_as_required(['config', 'workdir'])


def preflight(argv) -> None:
  """Fails early, without a traceback, on a missing config file, variant or field, or a bad
  value of the CPU compile options' environment variables."""
  from onestep_jax import xla_cpu
  from onestep_jax.experiment.overrides import load_config_file, unknown_override
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  try:
    xla_cpu.requested_options()
    problem = spec and unknown_override(load_config_file(spec), argv)
  except (ValueError, FileNotFoundError) as e:
    problem = str(e)
  if problem:
    print(f'error: {problem}', file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  error = initialize_distributed()
  if error:
    print(error, file=sys.stderr)
    return 2
  from onestep_jax.experiment.runner import run
  from onestep_jax.train.preemption import Preempted
  try:
    metrics = run(flags.FLAGS.config, flags.FLAGS.workdir, mode=flags.FLAGS.mode,
                  progress=flags.FLAGS.progress)
  except Preempted as e:  # SIGTERM: exit 143 so that schedulers and `&&` see the stop
    print(f'saved {e.saved}; rerun the same command to resume', file=sys.stderr)
    return e.code
  except (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for name in sorted(metrics):
    print(f'{name:40s} {metrics[name]:.6g}')
  return 0


if __name__ == '__main__':
  reexec_with_tcmalloc()
  preflight(sys.argv)
  app.run(main)
