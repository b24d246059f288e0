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
flags.DEFINE_bool('distributed', False, 'multi-process: call jax.distributed.initialize() first '
                  '(TPU pods and SLURM are detected; elsewhere give the three flags below)')
flags.DEFINE_string('coordinator_address', None, 'with --distributed: host:port of process 0 '
                    '(default: $JAX_COORDINATOR_ADDRESS, or detected)')
flags.DEFINE_integer('num_processes', None, 'with --distributed: number of processes')
flags.DEFINE_integer('process_id', None, 'with --distributed: this process, 0..num_processes-1')
DISTRIBUTED_FLAGS = ('coordinator_address', 'num_processes', 'process_id')
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
  given = [f'--{name}' for name in DISTRIBUTED_FLAGS if flags.FLAGS[name].present]
  if given and not flags.FLAGS.distributed:
    raise app.UsageError(f'{", ".join(given)} needs --distributed')
  if flags.FLAGS.distributed:
    import jax
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU devices across processes
    try:
      jax.distributed.initialize(**{name: flags.FLAGS[name].value for name in DISTRIBUTED_FLAGS})
    except (ValueError, TypeError) as e:
      print(f'error: --distributed: {e} (outside SLURM and TPU pods, give --coordinator_address, '
            '--num_processes and --process_id)', file=sys.stderr)
      return 2
  from onestep_jax.experiment.runner import run
  from onestep_jax.train.trainer import Preempted
  try:
    metrics = run(flags.FLAGS.config, flags.FLAGS.workdir, mode=flags.FLAGS.mode,
                  progress=flags.FLAGS.progress)
  except Preempted as e:  # SIGTERM: exit 143 so that schedulers and `&&` see the stop
    print(f'saved step {e.step}; rerun the same command to resume', file=sys.stderr)
    return e.code
  except (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for name in sorted(metrics):
    print(f'{name:40s} {metrics[name]:.6g}')
  return 0


if __name__ == '__main__':
  preflight(sys.argv)
  app.run(main)
