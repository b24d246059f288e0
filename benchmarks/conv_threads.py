"""Which of the U-Net's convolution fusions use a second core: one core against all, per shape.

  python benchmarks/conv_threads.py [--repeats=3] [--calls=20]
      [--out benchmarks/results/conv_threads.json]

Issue 7's remaining gap is the input-gradient pass on two cores (docs/RESULTS.md, "Which
convolutions use the second core"). This times a 3x3 convolution of a 16x32x32 NHWC batch,
compiled with the library's CPU options (onestep_jax.xla_cpu), for each (input, output) channel
pair of SHAPES and each program of EPILOGUES: `none`, the convolution alone (which XLA then runs
itself); `bias`, y + b, and `silu`, silu(y + b) with the library's sigmoid (YNNPACK takes the
convolution into its fusion of the element-wise work); and `fenced`, silu(y + b) with the
convolution's input and output behind `onestep_jax.nets.fusion_fence.fence`, which keeps it out
of that fusion, as the U-Nets' convolutions of `fusion_fence.one_core_in_ynn` shapes are. Each
case runs in `--repeats` pairs of fresh processes, one pinned to one core before JAX starts and
one on every core of this process; prints and writes the medians and the speed-up (one core /
all cores).
"""
import argparse
import json
import os
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402

BATCH, SIZE = 16, 32
# (input channels, output channels): the reference U-Net's 3x3 convolutions at 32x32 and their
# input gradients (the transposed convolution swaps the two), and neighbours of them
SHAPES = ((32, 32), (32, 40), (32, 48), (32, 64), (32, 96), (32, 128), (32, 160), (40, 32),
          (48, 32), (64, 32), (96, 32), (64, 64), (64, 96), (96, 96))
EPILOGUES = ('none', 'bias', 'silu', 'fenced')


def case_name(cin: int, cout: int, epilogue: str) -> str:
  return f'{cin}->{cout} {epilogue}'


def cases() -> list[tuple[int, int, str]]:
  """Every (cin, cout, epilogue) timed: each shape with `silu` and `fenced`, the two shapes where
  the epilogue decides (32->32, 32->96) also with `none` and `bias`."""
  out = [(cin, cout, e) for cin, cout in SHAPES for e in ('silu', 'fenced')]
  out += [(cin, cout, e) for cin, cout in ((32, 32), (32, 96)) for e in ('none', 'bias')]
  return out


def child(calls: int) -> dict[str, float]:
  """Median milliseconds of each case in this process."""
  import jax
  import numpy as np
  from onestep_jax import xla_cpu
  from onestep_jax.nets.fusion_fence import fence
  from onestep_jax.nets.logistic import silu
  conv = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  programs = {'none': lambda x, w, b: conv(x, w), 'bias': lambda x, w, b: conv(x, w) + b,
              'silu': lambda x, w, b: silu(conv(x, w) + b),
              'fenced': lambda x, w, b: silu(fence(conv(fence(x), w)) + b)}
  rs = np.random.RandomState(0)
  out = {}
  for cin, cout, epilogue in cases():
    x = rs.randn(BATCH, SIZE, SIZE, cin).astype(np.float32)
    w = (rs.randn(3, 3, cin, cout) / np.sqrt(9 * cin)).astype(np.float32)
    b = rs.randn(cout).astype(np.float32)
    fn = xla_cpu.jit(programs[epilogue])
    out[case_name(cin, cout, epilogue)] = 1e3 * step_timing.median_call_seconds(
        fn, (x, w, b), calls, warmup=3)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3, help='pairs of fresh processes')
  parser.add_argument('--calls', type=int, default=20, help='timed calls per case and process')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'conv_threads.json'))
  parser.add_argument('--child', choices=('one', 'all'), default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.repeats < 1 or args.calls < 1:
    parser.error('--repeats and --calls must be at least 1')
  if args.child:
    if args.child == 'one':
      os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(json.dumps(child(args.calls)))
    return
  started = step_timing.machine()
  runs = step_timing.run_children(__file__, ['one', 'all'], repeats=args.repeats,
                                  args=[f'--calls={args.calls}'])
  results = {}
  print(f'{"cin->cout epilogue":20s} {"one core":>9s} {"all cores":>9s} {"speed-up":>8s}')
  for cin, cout, epilogue in cases():
    name = case_name(cin, cout, epilogue)
    one = statistics.median(r[name] for r in runs['one'])
    every = statistics.median(r[name] for r in runs['all'])
    results[name] = {'one_core_ms': one, 'all_cores_ms': every, 'speed_up': one / every,
                     'per_process': {k: [r[name] for r in v] for k, v in runs.items()}}
    print(f'{name:20s} {one:9.2f} {every:9.2f} {one / every:8.2f}', flush=True)
  step_timing.write(args.out, results, started=started, repeats=args.repeats,
                    counts={'calls': args.calls, 'batch': BATCH, 'size': SIZE,
                            'cores': len(os.sched_getaffinity(0))}, note='')


if __name__ == '__main__':
  main()
