"""Time of each kind of pass through the EDM reference U-Net, the parts a training phase is made of.

  python benchmarks/network_passes.py [--passes=forward,input_gradient,full_gradient]
      [--repeats=3] [--calls=20] [--out=benchmarks/results/network_passes.json]

The reference network of benchmarks/train_step.py (DDPM++ SongUNet, 32x32x3, 32 channels, 10
classes, random weights) as an EDM denoiser at batch 16, float32, compiled with the library's CPU
options (onestep_jax.xla_cpu), one jitted program per pass:
- `forward`: D(x, sigma), the generator's samples in a fake-score phase, or a teacher read under
  stop-gradient (Diff-Instruct, DMD, DMD2);
- `input_gradient`: the gradient of sum(D(x)^2) in x only, what a frozen teacher or fake score
  costs in SiD's, SIM's, f-distill's and Uni-Instruct's generator phases;
- `full_gradient`: the gradient in the parameters and in x, a trained network's pass.
Each pass runs in `--repeats` fresh processes, round-robin; each process times `--calls` calls
after 3 untimed ones and a 2048^3 float32 matmul; the JSON has the medians over processes, in
milliseconds and in matmul units.
"""
import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402
from onestep_jax.experiment.allocator import reexec_with_tcmalloc  # noqa: E402

PASSES = ('forward', 'input_gradient', 'full_gradient')
BATCH = 16
WARMUP = 3


def program(name: str):
  """(jitted function, its arguments) of one pass."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from onestep_jax import xla_cpu
  from onestep_jax.methods.denoisers import NetworkDenoiser
  from onestep_jax.methods.networks import build_network, init_network
  from train_step import edm_reference_config
  with tempfile.TemporaryDirectory() as tmp:
    kwargs = edm_reference_config(tmp).net.kwargs
  net = NetworkDenoiser(build_network('song_unet', kwargs), objective='edm', sigma_data=0.5)
  params = init_network(net.module, jax.random.PRNGKey(0), example_shape=(32, 32, 3),
                        num_classes=10)
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(BATCH, 32, 32, 3), jnp.float32)
  sigma = jnp.asarray(np.exp(rs.randn(BATCH) * 1.2 - 1.2), jnp.float32)
  labels = jax.nn.one_hot(jnp.arange(BATCH) % 10, 10)
  square = lambda p, x: jnp.sum(jnp.square(net.denoise(p, x, sigma, labels)))  # noqa: E731
  fn = {'forward': lambda p, x: net.denoise(p, x, sigma, labels),
        'input_gradient': jax.grad(square, argnums=1),
        'full_gradient': jax.grad(square, argnums=(0, 1))}[name]
  return xla_cpu.jit(fn), (params, x)


def child(name: str, calls: int) -> dict:
  import jax
  fn, args = program(name)
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first_s = time.perf_counter() - start
  return {'step_s': step_timing.median_call_seconds(fn, args, calls, warmup=WARMUP),
          'first_call_s': first_s,
          'matmul_s': step_timing.matmul_seconds(),
          'peak_rss_mb': step_timing.memory_mb()['peak_rss_mb']}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--passes', default=','.join(PASSES))
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes per pass')
  parser.add_argument('--calls', type=int, default=20, help='timed calls per process')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                           'network_passes.json'))
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.calls)))
    return
  names = args.passes.split(',')
  unknown = sorted(set(names) - set(PASSES))
  if unknown:
    parser.error(f'unknown pass(es) {unknown}; valid: {list(PASSES)}')
  if args.repeats < 1 or args.calls < 1:
    parser.error('--repeats and --calls must be at least 1')
  started = step_timing.machine()
  runs = step_timing.run_children(__file__, names, repeats=args.repeats,
                                  args=[f'--calls={args.calls}'])
  results = {}
  for name in names:
    rs = runs[name]
    med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
    results[name] = {'ms': 1e3 * med('step_s'),
                     'matmul_units': statistics.median(r['step_s'] / r['matmul_s'] for r in rs),
                     'matmul_ms': 1e3 * med('matmul_s'), 'first_call_s': med('first_call_s'),
                     'peak_rss_mb': med('peak_rss_mb'), 'runs': rs}
    print(f'{name:15s} {results[name]["ms"]:7.1f} ms = {results[name]["matmul_units"]:5.2f} '
          f'matmul (matmul {results[name]["matmul_ms"]:.1f} ms), first call '
          f'{results[name]["first_call_s"]:.1f} s', flush=True)
  step_timing.write(args.out, results, started=started, repeats=args.repeats,
                    counts={'calls': args.calls, 'warmup': WARMUP, 'batch': BATCH}, note='')


if __name__ == '__main__':
  reexec_with_tcmalloc()
  main()
