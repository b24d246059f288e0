"""Time of the low-dimensional two-sample metrics at the final evaluation's size.

  python benchmarks/sample_metrics_speed.py [--size=20000] [--repeats=3]
      [--out benchmarks/results/sample_metrics_speed.json]

Two exact samples of the 8-Gaussian ring of `--size` points each (the runner's final evaluation
compares 20,000 against 20,000, twice: the model and the data floor). Each metric of
`onestep_jax.eval.sample_metrics` (sliced W2, MMD^2 with its median bandwidth, the energy
distance, and the median distance alone) is timed `--repeats` times after a first, compiling
call; printed and written are the medians and every time, and the values (which a change of
speed must leave as they are).
"""
import argparse
import os
import pathlib
import statistics
import time

import step_timing


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=20000)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default=str(pathlib.Path(__file__).resolve().parent / 'results' /
                                           'sample_metrics_speed.json'))
  args = parser.parse_args()
  if args.size < 2 or args.repeats < 1:
    parser.error('--size must be at least 2 and --repeats at least 1')
  import jax
  import numpy as np
  from onestep_jax.data import get_dataset
  from onestep_jax.eval import sample_metrics
  ring = get_dataset('ring8').mixture
  x = ring.sample_numpy(args.size, np.random.default_rng(0))
  y = ring.sample_numpy(args.size, np.random.default_rng(1))
  metrics = {'swd': lambda: sample_metrics.sliced_wasserstein(x, y, key=jax.random.PRNGKey(0)),
             'mmd': lambda: sample_metrics.mmd2(x, y),
             'energy': lambda: sample_metrics.energy_distance(x, y),
             'median_distance': lambda: sample_metrics.median_distance(x, y)}
  result = {'size': args.size, 'repeats': args.repeats, 'seconds': {}, 'median_s': {},
            'values': {}, 'machine': step_timing.machine()}
  for name, fn in metrics.items():
    start = time.perf_counter()
    result['values'][name] = float(fn())
    result[f'first_call_s_{name}'] = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      float(fn())
      times.append(time.perf_counter() - start)
    result['seconds'][name], result['median_s'][name] = times, statistics.median(times)
    print(f'{name:16s} median {result["median_s"][name]:.3f} s ('
          + ', '.join(f'{t:.3f}' for t in times) + f'), value {result["values"][name]!r}')
  result['load_avg_at_end'] = list(os.getloadavg())
  step_timing.write_json(args.out, result)


if __name__ == '__main__':
  main()
