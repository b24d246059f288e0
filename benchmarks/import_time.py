"""Import times of ml_dtypes, jax and the experiment runner, each in fresh processes.

  python benchmarks/import_time.py [--repeats=5] [--out benchmarks/results/import_time.json]

Every process the library starts (a run, a resume, a test's run, a benchmark's child) imports
jax, and jax imports ml_dtypes. Each module is imported alone in `--repeats` fresh processes
(round-robin); printed and written are the medians and every time, with the versions and paths
of ml_dtypes, numpy and jax. `onestep_jax.experiment.runner` is what `experiments/main.py`
imports (jax included).
"""
import json
import os
import statistics
import subprocess
import sys

import step_timing

MODULES = ('ml_dtypes', 'jax', 'onestep_jax.experiment.runner')
_TIMER = ('import importlib, json, time; t = time.perf_counter(); importlib.import_module({!r}); '
          'print(json.dumps(time.perf_counter() - t))')
_VERSIONS = ('import json, ml_dtypes, numpy, jax; print(json.dumps({m.__name__: [m.__version__, '
             'm.__file__] for m in (ml_dtypes, numpy, jax)}))')


def _python(code: str) -> str:
  """The last line `code` prints in a fresh interpreter (its error if it fails)."""
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  if done.returncode:
    raise SystemExit(f'python -c {code!r} failed: '
                     + (done.stderr.strip().splitlines() or ['no error output'])[-1])
  return done.stdout.strip().splitlines()[-1]


def main():
  args = step_timing.repeats_and_out(__doc__, repeats=5, out='import_time.json')
  times = {m: [] for m in MODULES}
  for _ in range(args.repeats):
    for m in MODULES:
      times[m].append(json.loads(_python(_TIMER.format(m))))
  result = {'median_s': {m: statistics.median(t) for m, t in times.items()}, 'times_s': times,
            'versions': json.loads(_python(_VERSIONS)), 'repeats': args.repeats,
            'load_avg_at_end': list(os.getloadavg())}
  for m in MODULES:
    print(f'import {m}: median {result["median_s"][m]:.3f} s ('
          + ', '.join(f'{t:.3f}' for t in times[m]) + ')')
  print('versions: ' + ', '.join(f'{k} {v[0]}' for k, v in result['versions'].items()))
  step_timing.write_json(args.out, result)


if __name__ == '__main__':
  main()
