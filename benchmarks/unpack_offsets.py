"""What unpacking the packed optimizer update at offsets passed in saves, against constant offsets.

  python benchmarks/unpack_offsets.py [--leaves=300] [--blocks=6] [--steps=8]
      [--out=benchmarks/results/unpack_offsets.json]

XLA:CPU compiles the identical kernels of a program once (onestep_jax/train/packing.py). Part 1,
small programs: the compile seconds of `--leaves` element-wise updates of leaves of 7 sizes and
of as many sizes as leaves, and of as many slices of one vector at constant offsets and at
offsets passed in as scalar arguments. Part 2, the EDM reference step of
benchmarks/train_step.py compiled both ways in this process: the trainer's phase update with its
packed groups' starts passed in (`Trainer.phase_args`, the default) and the same update with the
starts as constants. For each: kernels, distinct kernels, compile seconds, and the step's median
time over `--blocks` alternating blocks of `--steps` steps; then whether both ended with the same
parameters. Prints and writes the JSON.
"""
import argparse
import functools
import json
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

from onestep_jax.experiment.allocator import reexec_with_tcmalloc  # noqa: E402


def compile_seconds(fn, *args) -> tuple[float, str]:
  """Seconds to lower and compile xla_cpu.jit(fn) for `args`, and the compiled program's text."""
  from onestep_jax import xla_cpu
  start = time.perf_counter()
  hlo = xla_cpu.jit(fn).lower(*args).compile().as_text()
  return time.perf_counter() - start, hlo


def small_programs(leaves: int) -> dict:
  """Part 1 (see the module's doc): {program: {compile_s, kernels, distinct_kernels}}."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from profile_step import kernel_counts
  few = [jnp.ones(64 + (i % 7) * 32) for i in range(leaves)]
  many = [jnp.ones(64 + i) for i in range(leaves)]
  sizes = [x.size for x in few]
  starts = np.cumsum([0] + sizes[:-1]).tolist()
  flat = jnp.ones(sum(sizes))
  update = lambda xs: [x * 1.5 + 1 for x in xs]
  programs = {
      f'update, {leaves} leaves of 7 sizes': (update, few),
      f'update, {leaves} leaves of {leaves} sizes': (update, many),
      f'{leaves} slices at constant offsets':
          (lambda xs, v: [x + v[o:o + x.size] for x, o in zip(xs, starts)], few, flat),
      f'{leaves} slices at offsets passed in':
          (lambda xs, v, s: [x + jax.lax.dynamic_slice_in_dim(v, o, x.size)
                             for x, o in zip(xs, s)],
           few, flat, tuple(jnp.int32(o) for o in starts)),
  }
  out = {}
  for name, (fn, *args) in programs.items():
    seconds, hlo = compile_seconds(fn, *args)
    out[name] = {'compile_s': seconds, **kernel_counts(hlo)}
    print(f'{name:40s} compile {seconds:5.2f} s  {out[name]["kernels"]} kernels, '
          f'{out[name]["distinct_kernels"]} distinct', flush=True)
  return out


def edm_step_both_ways(blocks: int, steps: int) -> dict:
  """Part 2 (see the module's doc)."""
  import jax
  import numpy as np
  from onestep_jax import xla_cpu
  from onestep_jax.train.mesh import global_batch
  from profile_step import kernel_counts
  from train_step import REFERENCE, build, config_by_name
  with tempfile.TemporaryDirectory() as tmp:
    config = config_by_name(REFERENCE, tmp)
    dataset, setup, trainer, state = build(config)
  batch = global_batch(dataset.get_batch(0, config.train.batch_size, seed=0), trainer.mesh)
  phase, = [name for name, _ in setup.stages[-1].schedule]
  constant_starts = {n: trainer._packing(p).starts()  # pylint: disable=protected-access
                     for n, p in state.params.items()}
  ways = {  # name: (jitted update, its arguments after the state)
      'starts passed in': (trainer._jitted(state, phase),  # pylint: disable=protected-access
                           trainer.phase_args(state, batch, 0)[1:]),
      'constant offsets': (xla_cpu.jit(functools.partial(
          trainer._phase_update, trainer.phases[phase],  # pylint: disable=protected-access
          starts=constant_starts), donate_argnums=0), (batch, np.int32(0)))}
  states = {name: jax.tree.map(lambda x: x.copy(), state) for name in ways}
  out, executables = {}, {}
  for name, (fn, args) in ways.items():
    start = time.perf_counter()
    executables[name] = fn.lower(states[name], *args).compile()
    out[name] = {'compile_s': time.perf_counter() - start,
                 **kernel_counts(executables[name].as_text()), 'block_ms': []}
  for _ in range(blocks):
    for name, (_, args) in ways.items():
      times = []
      for _ in range(steps):
        start = time.perf_counter()
        states[name], _ = executables[name](states[name], *args)
        jax.block_until_ready(states[name])
        times.append(time.perf_counter() - start)
      out[name]['block_ms'].append(1e3 * statistics.median(times))
  for name, r in out.items():
    r['step_ms'] = statistics.median(r['block_ms'])
    print(f'EDM step, {name:17s} compile {r["compile_s"]:5.2f} s  {r["kernels"]} kernels, '
          f'{r["distinct_kernels"]} distinct; step {r["step_ms"]:.1f} ms (blocks '
          + ', '.join(f'{t:.1f}' for t in r['block_ms']) + ')', flush=True)
  a, b = (jax.tree.leaves(s.params) for s in states.values())
  out['same_params'] = all(bool((x == y).all()) for x, y in zip(a, b))
  print(f'same parameters after {blocks * steps} steps each: {out["same_params"]}')
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--leaves', type=int, default=300, help='leaves of the small programs')
  parser.add_argument('--blocks', type=int, default=6, help='alternating blocks of EDM steps')
  parser.add_argument('--steps', type=int, default=8, help='EDM steps per block')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                            'unpack_offsets.json'))
  args = parser.parse_args()
  for flag in ('leaves', 'blocks', 'steps'):
    if getattr(args, flag) < 1:
      parser.error(f'--{flag} must be at least 1')
  import step_timing
  result = {'small_programs': small_programs(args.leaves),
            'edm_step': edm_step_both_ways(args.blocks, args.steps),
            'leaves': args.leaves, 'blocks': args.blocks, 'steps': args.steps,
            '_measured': step_timing.machine()}
  step_timing.write_json(args.out, result)


if __name__ == '__main__':
  reexec_with_tcmalloc()
  main()
