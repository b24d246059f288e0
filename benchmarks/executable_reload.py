"""Compiled phases reloaded in a fresh process (issue 6's warm start): compile against reload.

  python benchmarks/executable_reload.py [--repeats=2] [--note=...]

For the EDM reference step (benchmarks/train_step.py), one fresh process traces, lowers and
compiles every phase of the step ahead of time into an executable cache in a temporary directory
(onestep_jax.train.executable_cache; compile_s includes writing them) and runs one step; a
second fresh process builds the same state, loads the executables instead (no tracing, lowering
or compiling) and runs the same step. Reported per round: the compile time of the first process,
the load time and first-call time of the second, and whether both steps gave bitwise the same
state. Writes benchmarks/results/executable_reload.json.
"""
import argparse
import hashlib
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


def child(mode: str, directory: str) -> dict:
  """'compile': compiles the step's phases, keeping them in an executable cache in `directory`
  (onestep_jax.train.executable_cache, as a workdir keeps them); 'load': loads them from it.
  Both run one step and return their timings and a digest of the resulting state."""
  import jax
  import numpy as np
  from onestep_jax.train.executable_cache import ExecutableCache
  from onestep_jax.train.mesh import global_batch
  from train_step import REFERENCE, build, edm_reference_config

  with tempfile.TemporaryDirectory() as tmp:
    config = edm_reference_config(tmp)
    config.train.compilation_cache = False
    dataset, setup, trainer, state = build(
        config, executable_cache=ExecutableCache(directory, key=REFERENCE))
  batch = global_batch(dataset.get_batch(0, config.train.batch_size, seed=0), trainer.mesh)
  # The step's phases take Trainer.phase_args; its end (None: EMA and step count) takes state.
  phases = [name for name, _ in setup.stages[-1].schedule] + [None]
  arguments = lambda name, state: (state,) if name is None else trainer.phase_args(state, batch, 0)
  if mode == 'load':  # pylint: disable-next=protected-access
    trainer._lowered = lambda *_: sys.exit('load: a phase was not in the executable cache')
  r = {}
  t0 = time.perf_counter()  # pylint: disable-next=protected-access
  executables = {name: trainer._executable(name, *arguments(name, state)) for name in phases}
  r[f'{mode}_s'] = time.perf_counter() - t0
  if mode == 'compile':
    r['serialized_mb'] = sum(f.stat().st_size for f in pathlib.Path(directory).iterdir()) / 2**20
  t0 = time.perf_counter()
  for name in phases:
    out = executables[name](*arguments(name, state))
    state = out if name is None else out[0]
  jax.block_until_ready(state)
  r['first_call_s'] = time.perf_counter() - t0
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(state):
    digest.update(np.asarray(leaf).tobytes())
  r['state_sha256'] = digest.hexdigest()
  r['phases'] = [str(name) for name in phases]
  return r


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=2, help='rounds of compile + load processes')
  parser.add_argument('--note', default='', help='recorded in the JSON (e.g. machine load)')
  parser.add_argument('--out',
                      default=str(ROOT / 'benchmarks' / 'results' / 'executable_reload.json'))
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  parser.add_argument('--dir', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.dir)))
    return
  if args.repeats < 1:
    parser.error('--repeats must be at least 1')
  started = step_timing.machine()
  rounds = []
  for _ in range(args.repeats):
    with tempfile.TemporaryDirectory() as directory:
      runs = step_timing.run_children(__file__, ['compile', 'load'], repeats=1,
                                      args=[f'--dir={directory}'])
    compiled, loaded = runs['compile'][0], runs['load'][0]
    rounds.append({'compile_s': compiled['compile_s'], 'serialized_mb': compiled['serialized_mb'],
                   'load_s': loaded['load_s'],
                   'first_call_after_compile_s': compiled['first_call_s'],
                   'first_call_after_load_s': loaded['first_call_s'],
                   'same_state': compiled['state_sha256'] == loaded['state_sha256']})
    print(json.dumps(rounds[-1]), flush=True)
  med = lambda k: statistics.median(r[k] for r in rounds)
  results = {'edm_reference_32x32': {
      'phases': compiled['phases'], 'compile_s': med('compile_s'), 'load_s': med('load_s'),
      'load_over_compile': med('load_s') / med('compile_s'),
      'first_call_after_load_s': med('first_call_after_load_s'),
      'same_state': all(r['same_state'] for r in rounds), 'rounds': rounds}}
  print(f'compile {results["edm_reference_32x32"]["compile_s"]:.1f} s, load '
        f'{results["edm_reference_32x32"]["load_s"]:.1f} s, same state: '
        f'{results["edm_reference_32x32"]["same_state"]}')
  step_timing.write(args.out, results, started=started, repeats=args.repeats,
                    counts={'steps': 1}, note=args.note)


if __name__ == '__main__':
  reexec_with_tcmalloc()
  main()
