"""The library's XLA:CPU compile options against each other, on the EDM reference step and the
Diff-Instruct iteration (issue 6).

  python benchmarks/compile_options.py [--variable=ONESTEP_JAX_YNN_FUSION]
      [--choices=xla_default,dot+eltwise+reduce] [--methods=diff_instruct] [--repeats=3]
      [--steps=8] [--warmup=2]
      [--note=...] [--out benchmarks/results/compile_options.json]

Each choice is a value of the environment variable `--variable` (see onestep_jax/xla_cpu.py):
YNNPACK fusion types joined by '+' for ONESTEP_JAX_YNN_FUSION, an LLVM optimisation level 0-3 for
ONESTEP_JAX_CPU_OPT_LEVEL, a scheduler for ONESTEP_JAX_CPU_SCHEDULER, or xla_default for jaxlib's
own. Fresh processes of
benchmarks/train_step.py (EDM teacher step) and benchmarks/distill_step.py (the iterations of
`--methods`, default Diff-Instruct) run round-robin over the choices, so that a change of machine load hits all of them
alike; figures are medians over processes, also in units of the 2048^3 float32 matmul, which
every process times with jaxlib's default compile options.
"""
import argparse
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402
from onestep_jax import xla_cpu  # noqa: E402
from onestep_jax.experiment.allocator import reexec_with_tcmalloc  # noqa: E402

TEACHER_ROW = ('train_step.py', 'edm_reference_32x32')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  options = {o.env: o for o in xla_cpu.OPTIONS}
  parser.add_argument('--variable', default=xla_cpu.ENV, choices=sorted(options),
                      help='the environment variable that the choices set')
  parser.add_argument('--choices', default=None,
                      help='comma-separated values of --variable (YNNPACK types joined by +); '
                           'default: xla_default and the library\'s default')
  parser.add_argument('--methods', default='diff_instruct',
                      help='comma-separated iterations of benchmarks/distill_step.py to time too')
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes per choice and row')
  parser.add_argument('--steps', type=int, default=8, help='timed steps per process')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps first (compile)')
  parser.add_argument('--note', default='', help='recorded in the JSON (e.g. machine load)')
  parser.add_argument('--out',
                      default=str(ROOT / 'benchmarks' / 'results' / 'compile_options.json'))
  args = parser.parse_args()
  if args.repeats < 1:
    parser.error('--repeats must be at least 1')
  option = options[args.variable]
  if not args.choices and option.default == xla_cpu.XLA_DEFAULT:
    parser.error(f'--choices is needed: the library leaves {args.variable} at jaxlib\'s default')
  choices = (args.choices or f'{xla_cpu.XLA_DEFAULT},{option.default.replace(",", "+")}').split(',')
  for choice in choices:
    if choice != xla_cpu.XLA_DEFAULT:
      try:
        option.parse(choice.replace('+', ','))
      except ValueError as e:
        parser.error(f'--choices: {e}')
  from distill_step import check_names
  methods = [m for m in args.methods.split(',') if m]
  try:
    check_names(methods)
  except ValueError as e:
    parser.error(f'--methods: {e}')
  rows = [TEACHER_ROW] + [('distill_step.py', m) for m in methods]
  started = step_timing.machine()
  runs = {(c, name): [] for c in choices for _, name in rows}
  for rep in range(args.repeats):
    for choice in choices:
      env = {**os.environ, args.variable: choice.replace('+', ',')}
      for script, name in rows:
        r = step_timing.run_children(str(ROOT / 'benchmarks' / script), [name], repeats=1, env=env,
                                     args=[f'--steps={args.steps}', f'--warmup={args.warmup}'])
        runs[choice, name] += r[name]
        print(f'  {choice} {name} process {rep}: {1000 * r[name][0]["step_s"]:.1f} ms, '
              f'matmul {1000 * r[name][0]["matmul_s"]:.1f} ms', flush=True)
  results = {}
  for (choice, name), rs in runs.items():
    results.setdefault(choice, {})[name] = summary = step_timing.summarize(rs)
    summary['runs'] = rs
    print(step_timing.format_row(f'{choice} {name}', summary), flush=True)
  step_timing.write(args.out, results, started=started, repeats=args.repeats,
                    counts={'steps': args.steps, 'warmup': args.warmup, 'variable': args.variable},
                    note=args.note)


if __name__ == '__main__':
  reexec_with_tcmalloc()
  main()
