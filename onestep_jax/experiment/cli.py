"""Command-line pieces shared by the scripts in experiments/: multi-process start-up."""
from __future__ import annotations

from typing import Optional

from absl import app, flags

DISTRIBUTED_FLAGS = ('coordinator_address', 'num_processes', 'process_id')


def define_distributed_flags() -> None:
  """--distributed and the three flags that locate the processes outside SLURM and TPU pods."""
  flags.DEFINE_bool('distributed', False, 'multi-process: call jax.distributed.initialize() '
                    'first (TPU pods and SLURM are detected; elsewhere give the three flags '
                    'below)')
  flags.DEFINE_string('coordinator_address', None, 'with --distributed: host:port of process 0 '
                      '(default: $JAX_COORDINATOR_ADDRESS, or detected)')
  flags.DEFINE_integer('num_processes', None, 'with --distributed: number of processes')
  flags.DEFINE_integer('process_id', None, 'with --distributed: this process, '
                       '0..num_processes-1')


def initialize_distributed() -> Optional[str]:
  """Starts jax.distributed if --distributed was given; an error message if that failed.

  Raises:
    app.UsageError: one of DISTRIBUTED_FLAGS without --distributed.
  """
  given = [f'--{name}' for name in DISTRIBUTED_FLAGS if flags.FLAGS[name].present]
  if given and not flags.FLAGS.distributed:
    raise app.UsageError(f'{", ".join(given)} needs --distributed')
  if not flags.FLAGS.distributed:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU devices across processes
  try:
    jax.distributed.initialize(**{name: flags.FLAGS[name].value for name in DISTRIBUTED_FLAGS})
  except (ValueError, TypeError) as e:
    return (f'error: --distributed: {e} (outside SLURM and TPU pods, give '
            '--coordinator_address, --num_processes and --process_id)')
  return None
