"""What the trainer's one set of temporaries costs in time and saves in memory (issue 6).

  python benchmarks/temporaries_wait.py [--methods=diff_instruct,sid,dmd2] [--blocks=8]
      [--steps=4] [--out=benchmarks/results/temporaries_wait.json]

Per method of benchmarks/distill_step.py, a fresh process (under tcmalloc, which the wait needs)
compiles the iteration once and then alternates blocks of `--steps` iterations with the wait
(`Trainer(one_set_of_temporaries=True)`: after each phase with large XLA temporaries, until they
are freed) and without it, so that both ways run the same programs on the same machine state.
Prints and records the median iteration time of each way and the resident memory after each
block. The wait is first, so the blocks without it show what the second set of temporaries adds.
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

from onestep_jax.experiment.allocator import allocator_in_use, reexec_with_tcmalloc  # noqa: E402


def alternate(name: str, blocks: int, steps: int) -> dict:
  """Iteration times (s) with and without the wait, and resident MB after each block."""
  import jax
  import step_timing
  from distill_step import distill_config
  with tempfile.TemporaryDirectory() as tmp:
    config, make_teacher = distill_config(name, tmp)
    make_teacher()
    config, dataset, setup, trainer = step_timing.build_iteration(config,
                                                                  one_set_of_temporaries=True)
    state = trainer.init_state(setup.init_params(jax.random.PRNGKey(0)),
                               key=jax.random.PRNGKey(1))
    step, (batch,) = step_timing.steady_batches(config, dataset, setup, trainer, 1)
    for _ in range(3):  # compiles, reserves the temporaries' span, first runs
      state, _ = trainer.train_step(state, batch, step=step)
      step += 1
    jax.block_until_ready(state)
    temporaries = trainer._temporaries  # pylint: disable=protected-access
    times, resident = {'wait': [], 'no_wait': []}, []
    for block in range(blocks):
      way = 'no_wait' if block % 2 else 'wait'
      trainer._temporaries = temporaries if way == 'wait' else None  # pylint: disable=protected-access
      for _ in range(steps):
        start = time.perf_counter()
        state, _ = trainer.train_step(state, batch, step=step)
        jax.block_until_ready(state)
        times[way].append(time.perf_counter() - start)
        step += 1
      resident.append({'block': block, 'way': way, **step_timing.memory_mb()})
  return {'xla_temp_mb': {p: b / 2**20 for p, b in temporaries.items()},
          'step_s': {w: statistics.median(t) for w, t in times.items()},
          'times_s': times, 'memory_after_each_block_mb': resident}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--methods', default='diff_instruct,sid,dmd2')
  parser.add_argument('--blocks', type=int, default=8, help='alternating blocks, wait first')
  parser.add_argument('--steps', type=int, default=4, help='iterations per block')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                            'temporaries_wait.json'))
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  from distill_step import check_names
  try:
    check_names(args.methods.split(','))
  except ValueError as e:
    parser.error(str(e))
  reexec_with_tcmalloc()
  if allocator_in_use() != 'tcmalloc':
    raise SystemExit('error: the wait needs tcmalloc (apt-get install libtcmalloc-minimal4), '
                     'and ONESTEP_JAX_MALLOC must not be "system"')
  if args.child:  # one method in this fresh process: its record on the last line
    print(json.dumps(alternate(args.child, args.blocks, args.steps)))
    return
  import step_timing

  def report(name: str, _, r: dict) -> None:
    rss = [m['rss_mb'] for m in r['memory_after_each_block_mb']]
    print(f'{name}: iteration {r["step_s"]["wait"] * 1e3:.1f} ms with the wait, '
          f'{r["step_s"]["no_wait"] * 1e3:.1f} ms without (medians of '
          f'{len(r["times_s"]["wait"])} each); resident after each block (wait first) '
          + ', '.join(f'{v:.0f}' for v in rss) + ' MB', flush=True)

  measured = step_timing.machine()
  runs = step_timing.run_children(__file__, args.methods.split(','), repeats=1,
                                  args=[f'--blocks={args.blocks}', f'--steps={args.steps}'],
                                  on_result=report)
  step_timing.write_json(args.out, {
      'command': ' '.join(['python benchmarks/temporaries_wait.py', *sys.argv[1:]]),
      'measured': measured, 'methods': {name: r for name, (r,) in runs.items()}})


if __name__ == '__main__':
  main()
