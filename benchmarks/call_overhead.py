"""What one call of a generator costs beyond its arithmetic: a single jitted call against the same
call repeated inside a `lax.fori_loop`, per call.

  python benchmarks/call_overhead.py [--config=distill_fashion_mnist] [--method=diff_instruct] \
      [--batch=64] [--loop=8] [--repeats=7]
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/call_overhead.py

Reports, per network call, the medians over `repeats` executions of wall time, user and system
CPU time and minor page faults (getrusage of this process; CPU time and faults hardly move with
the machine's load, wall time does). A loop reuses its temporary buffers across its iterations; a
single call gets them from the allocator each time, so the difference in faults and system time
is the price of the allocator handing them back to the system between calls (issue 6).
Writes benchmarks/results/call_overhead_<config>_<allocator>.json (allocator: the malloc this
process loaded, `allocator.allocator_in_use()`: tcmalloc, jemalloc or system). Unlike the timing
benchmarks, this script does not restart itself under tcmalloc: it compares allocators.
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

from sampling_speed import method_setup  # noqa: E402

from onestep_jax.experiment.allocator import allocator_in_use  # noqa: E402


def per_call(fn, args, calls: int, repeats: int) -> dict:
  """Medians over `repeats` executions of fn(*args) (after one untimed), divided by `calls`."""
  import numpy as np
  np.asarray(fn(*args))
  rows = []
  for _ in range(repeats):
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    np.asarray(fn(*args))
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    rows.append({'wall_s': wall, 'user_s': after.ru_utime - before.ru_utime,
                 'system_s': after.ru_stime - before.ru_stime,
                 'minor_faults': after.ru_minflt - before.ru_minflt})
  return {k: statistics.median(r[k] for r in rows) / calls for k in rows[0]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='distill_fashion_mnist', help='a file of configs/')
  parser.add_argument('--method', default='diff_instruct', help='its one-step generator is timed')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--loop', type=int, default=8, help='calls inside the fori_loop')
  parser.add_argument('--repeats', type=int, default=7)
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp
  from onestep_jax import xla_cpu
  from onestep_jax.methods.networks import random_labels

  setup, params, num_classes = method_setup(args.config, args.method)
  student = next((g for g in setup.generators if g.model == 'student'), None)
  if student is None or student.nfe != 1:
    raise SystemExit(f'{args.method} has no one-step student generator')
  key = jax.random.PRNGKey(0)
  labels = random_labels(key, args.batch, num_classes)
  single = xla_cpu.jit(lambda p, k: student.sample_fn(p, k, args.batch, labels))
  shape = jax.eval_shape(single, params, key).shape

  def looped(p, k):
    body = lambda i, acc: acc + student.sample_fn(p, jax.random.fold_in(k, i), args.batch, labels)
    return jax.lax.fori_loop(0, args.loop, body, jnp.zeros(shape))

  results = {'single call': per_call(single, (params, key), 1, args.repeats),
             f'in a fori_loop of {args.loop}': per_call(xla_cpu.jit(looped), (params, key),
                                                         args.loop, args.repeats)}
  allocator = allocator_in_use()
  for name, r in results.items():
    print(f'{name:22s} per call: wall {r["wall_s"]:.3f} s, user {r["user_s"]:.3f} s, '
          f'system {r["system_s"]:.3f} s, {r["minor_faults"]:.0f} minor faults ({allocator})')
  path = ROOT / 'benchmarks' / 'results' / f'call_overhead_{args.config}_{allocator}.json'
  with open(path, 'w') as f:
    json.dump({'command': 'python benchmarks/call_overhead.py ' + ' '.join(sys.argv[1:]),
               'allocator': allocator, 'ld_preload': os.environ.get('LD_PRELOAD', ''),
               'date': time.strftime('%Y-%m-%d'),
               'load_avg': os.getloadavg(), **vars(args), 'per_call': results}, f, indent=2)
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
