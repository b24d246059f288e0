"""Images per second of each method's generators against the teacher's sampler (35 NFE Heun).

  python benchmarks/sampling_speed.py [--config=distill_digits] [--methods=diff_instruct,ayf_emd]
      [--batch=256] [--draws=10] [--repeats=3] [--note=...]

Each method builds `configs/<config>.py:<method>` in `repeats` fresh processes (round-robin,
benchmarks/step_timing.py) and times every generator of the method (the teacher at 35 NFE, the
one-step student, or a flow-map student at 1/2/4/8 steps) on batches of `batch`: compiled
ahead, one untimed draw, then the median of `draws` timed draws, samples on the host. The
networks start as the teacher (random weights would do as well): a student's sampling cost does
not depend on its training, only on its architecture and step count, so these figures are those
of the trained students of benchmarks/distill.py and benchmarks/flow_map.py, without the noise
of timing a single evaluation batch in a loaded run. Every time is also given in units of a
2048^3 float32 matmul of the same process. Writes benchmarks/results/sampling_speed_<config>.json.
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402
from onestep_jax.experiment.allocator import reexec_with_tcmalloc  # noqa: E402


def method_setup(config_name: str, method: str):
  """(method setup, its parameters as initialised, number of classes or 0) of
  `configs/<config_name>.py:<method>`, built as a run would build it."""
  import jax
  from onestep_jax.data import get_dataset
  from onestep_jax.experiment.overrides import load_config_file
  from onestep_jax.experiment.runner import resolve_config
  from onestep_jax.methods import build_method

  config = load_config_file(str(ROOT / 'configs' / f'{config_name}.py') + f':{method}')
  config.train.compilation_cache = False
  dataset = get_dataset(config.data.name, **config.data.kwargs.to_dict())
  config = resolve_config(config, dataset)
  setup = build_method(config, dataset)
  num_classes = dataset.num_classes if config.data.conditional else 0
  return setup, setup.init_params(jax.random.PRNGKey(0)), num_classes


def child(method: str, args) -> dict:
  """images/s of every generator of `method`, timed in this process."""
  import jax
  import numpy as np
  from onestep_jax import xla_cpu
  from onestep_jax.methods.networks import random_labels

  setup, params, num_classes = method_setup(args.config, method)
  out = {}
  for g in setup.generators:
    key = jax.random.PRNGKey(1)
    labels = random_labels(key, args.batch, num_classes)
    fn = xla_cpu.jit(lambda p, k, c, g=g: g.sample_fn(p, k, args.batch, c))
    fn = fn.lower(params, key, labels).compile()
    times = []
    for i in range(args.draws + 1):
      t0 = time.perf_counter()
      np.asarray(fn(params, jax.random.fold_in(key, i), labels))
      if i:  # the first draw is untimed
        times.append(time.perf_counter() - t0)
    out[f'{g.model}@{g.nfe}'] = {'draw_s': statistics.median(times), 'nfe': g.nfe}
  return {'generators': out, 'matmul_s': step_timing.matmul_seconds(),
          'load_avg': os.getloadavg()[0]}


def summarize(runs: list[dict], batch: int) -> dict:
  """Medians over processes: images/s, matmul units per draw, and the speed-up over the teacher."""
  out = {'matmul_s': statistics.median(r['matmul_s'] for r in runs), 'generators': {}}
  for name, first in runs[0]['generators'].items():
    draws = [r['generators'][name]['draw_s'] for r in runs]
    out['generators'][name] = {
        'nfe': first['nfe'], 'draw_s': statistics.median(draws),
        'images_per_s': batch / statistics.median(draws),
        'draw_matmul_units': statistics.median(
            d / r['matmul_s'] for d, r in zip(draws, runs)),
        'draw_s_per_process': draws}
  teacher = [v for k, v in out['generators'].items() if k.startswith('teacher@')]
  if teacher:
    for v in out['generators'].values():
      v['speedup_vs_teacher'] = v['images_per_s'] / teacher[0]['images_per_s']
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='distill_digits', help='a file of configs/')
  parser.add_argument('--methods', default='diff_instruct,ayf_emd')
  parser.add_argument('--batch', type=int, default=256, help='images per draw')
  parser.add_argument('--draws', type=int, default=10, help='timed draws per process')
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes per method')
  parser.add_argument('--note', default='', help='recorded in the JSON (e.g. machine load)')
  parser.add_argument('--out', default='', help='default: benchmarks/results/'
                      'sampling_speed_<config>.json')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    import json
    print(json.dumps(child(args.child, args)))
    return
  started = step_timing.machine()
  flags = [f'--config={args.config}', f'--batch={args.batch}', f'--draws={args.draws}']
  runs = step_timing.run_children(__file__, args.methods.split(','), repeats=args.repeats,
                                  args=flags)
  results = {m: summarize(r, args.batch) for m, r in runs.items()}
  for method, s in results.items():
    for name, g in s['generators'].items():
      print(f'{method:16s} {name:12s} {g["images_per_s"]:9.1f} images/s  '
            f'{g["draw_matmul_units"]:7.2f} matmul units per batch of {args.batch}'
            + (f'  {g["speedup_vs_teacher"]:5.1f}x the teacher' if 'speedup_vs_teacher' in g
               else ''), flush=True)
  out = args.out or str(ROOT / 'benchmarks' / 'results' / f'sampling_speed_{args.config}.json')
  step_timing.write(out, results, started=started, repeats=args.repeats,
                    counts={'draws': args.draws, 'untimed_draws': 1}, note=args.note)


if __name__ == '__main__':
  reexec_with_tcmalloc()
  main()
