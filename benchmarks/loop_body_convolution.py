"""A convolution's filter gradient inside a loop body against outside one, on this jaxlib's CPU.

  python benchmarks/loop_body_convolution.py [--repeats=3] [--out=...]

XLA:CPU runs some convolutions far slower inside a while loop's body than at the top level of a
program (jax-ml/jax#12868). A differentiated `lax.scan` puts its convolutions' filter gradients in
such a body: this made `ayf_emd_adv`'s student phase, which differentiates the student's few-step
samples, 6x slower on Fashion-MNIST until `flow_maps.sample(unroll=True)`. Each fresh process
times, for a 3x3 convolution on a [32, 28, 28, 64] batch (the Fashion-MNIST U-Net's widest
level), the filter gradient at the top level and inside a one-iteration `fori_loop`, under the
library's compile options (`onestep_jax.xla_cpu.jit`) and jaxlib's default (`jax.jit`); medians
over processes of the median of 5 calls. Writes
benchmarks/results/loop_body_convolutions/filter_gradient.json.
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402

SHAPE, CHANNELS, CALLS = (32, 28, 28, 64), 64, 5


def child() -> dict:
  import jax
  import jax.numpy as jnp
  from onestep_jax import xla_cpu
  x = jax.random.normal(jax.random.PRNGKey(0), SHAPE)
  dy = jax.random.normal(jax.random.PRNGKey(1), SHAPE[:3] + (CHANNELS,))
  w = jnp.zeros((3, 3, SHAPE[3], CHANNELS))

  def filter_gradient(x, dy):
    conv = lambda w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jax.vjp(conv, w)[1](dy)[0]

  def in_loop(x, dy):
    return jax.lax.fori_loop(0, 1, lambda i, acc: acc + filter_gradient(x, dy), w)

  out = {}
  for compiler, jit in (('onestep_jax', xla_cpu.jit), ('jaxlib_default', jax.jit)):
    for place, fn in (('top_level', filter_gradient), ('loop_body', in_loop)):
      compiled = jit(fn)
      jax.block_until_ready(compiled(x, dy))
      times = []
      for _ in range(CALLS):
        start = time.perf_counter()
        jax.block_until_ready(compiled(x, dy))
        times.append(time.perf_counter() - start)
      out[f'{compiler}/{place}_s'] = statistics.median(times)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                           'loop_body_convolutions' / 'filter_gradient.json'))
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child()))
    return
  started = step_timing.machine()
  runs = step_timing.run_children(__file__, ['filter_gradient'], repeats=args.repeats)
  runs = runs['filter_gradient']
  results = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
  for compiler in ('onestep_jax', 'jaxlib_default'):
    top, loop = results[f'{compiler}/top_level_s'], results[f'{compiler}/loop_body_s']
    results[f'{compiler}/loop_over_top_level'] = loop / top
    print(f'{compiler:15s} filter gradient: top level {1e3 * top:8.1f} ms, in a loop body '
          f'{1e3 * loop:8.1f} ms ({loop / top:.0f}x)')
  results['runs'] = runs
  results['shape'] = {'input': SHAPE, 'kernel': [3, 3, SHAPE[3], CHANNELS]}
  step_timing.write(args.out, results, started=started, repeats=args.repeats,
                    counts={'calls': CALLS}, note='')


if __name__ == '__main__':
  main()
