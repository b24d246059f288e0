"""How long a resumed run takes to get its state back (issue 6, start-up).

  python benchmarks/resume_start.py [--row=edm_reference] [--repeats=3]
      [--out benchmarks/results/resume_start.json]

Rows: `edm_reference`, the EDM reference setting of benchmarks/train_step.py (every group in the
checkpoint), and `distill_digits`, configs/distill_digits.py:diff_instruct (a frozen teacher, the
bundled digits U-Net). One process saves a checkpoint of the row's training state (and fills a
JAX persistent compilation cache, as a run's first process does); then fresh processes restore
it, with that cache, alternating two ways:
  template  what the experiment runner does: `Trainer.state_template` (shapes, dtypes and
            shardings; only the frozen groups made), then `Trainer.restore`;
  init      initialise the networks and place the state (`init_state(init_params(key))`), then
            restore into it (what the runner did before 7 December 2026).
Each child prints the seconds of the state's creation and of the restore; figures are medians
over processes.
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402
import train_step  # noqa: E402
from onestep_jax.experiment.allocator import reexec_with_tcmalloc  # noqa: E402

WAYS = ('template', 'init')
ROWS = ('edm_reference', 'distill_digits')


def row_config(row: str, workdir: str):
  from onestep_jax.experiment.overrides import load_config_file
  if row == 'edm_reference':
    return train_step.edm_reference_config(workdir)
  config = load_config_file(str(ROOT / 'configs' / 'distill_digits.py') + ':diff_instruct')
  config.train.compilation_cache = False  # the child's own cache is enabled instead
  return config


def child(way: str, row: str, workdir: str) -> dict:
  import jax
  from onestep_jax.train.checkpoint import Checkpointer
  from onestep_jax.train.compilation_cache import enable_compilation_cache
  enable_compilation_cache(os.path.join(workdir, 'xla'))  # as a run's is by default
  config = row_config(row, workdir)
  _, _, setup, trainer = step_timing.build_iteration(config)
  key_init, key = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
  checkpoints = os.path.join(workdir, 'checkpoints')

  def create():
    if way == 'template':
      return trainer.state_template(setup.init_params, key_init, key=key)
    return jax.block_until_ready(trainer.init_state(setup.init_params(key_init), key=key))

  start = time.perf_counter()
  state = create()
  create_s = time.perf_counter() - start
  with Checkpointer(checkpoints, teacher_identity='') as ckpt:
    if way == 'save':
      ckpt.save(state, optimizer_layout=trainer.optimizer_layout(state.params))
      return {}
    start = time.perf_counter()
    state = jax.block_until_ready(trainer.restore(ckpt, state))
    restore_s = time.perf_counter() - start
  return {'create_s': create_s, 'restore_s': restore_s, 'total_s': create_s + restore_s,
          'leaves': len(jax.tree.leaves(state.checkpoint_items()))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--row', default='edm_reference', choices=ROWS, help='the training state')
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes per way')
  parser.add_argument('--note', default='', help='recorded in the JSON (e.g. machine load)')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'resume_start.json'))
  parser.add_argument('--child', choices=WAYS + ('save',), help=argparse.SUPPRESS)
  parser.add_argument('--workdir', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.row, args.workdir)))
    return
  if args.repeats < 1:
    parser.error('--repeats must be at least 1')
  reexec_with_tcmalloc()  # the allocator of experiments/main.py
  with tempfile.TemporaryDirectory() as workdir:
    flags = [f'--workdir={workdir}', f'--row={args.row}']
    step_timing.run_children(__file__, ['save'], repeats=1, args=flags)
    runs = step_timing.run_children(
        __file__, WAYS, repeats=args.repeats, args=flags,
        on_result=lambda w, i, r: print(f'  {w} process {i}: state {r["create_s"]:.2f} s, '
                                        f'restore {r["restore_s"]:.2f} s', flush=True))
  result = {'row': args.row, 'note': args.note, '_measured': step_timing.machine()}
  for way in WAYS:
    med = {k: statistics.median(r[k] for r in runs[way])
           for k in ('create_s', 'restore_s', 'total_s')}
    result[way] = {**med, 'leaves': runs[way][0]['leaves'], 'runs': runs[way]}
    print(f'{way:9s} state {med["create_s"]:.2f} s + restore {med["restore_s"]:.2f} s = '
          f'{med["total_s"]:.2f} s (medians of {args.repeats} processes, '
          f'{result[way]["leaves"]} arrays)', flush=True)
  step_timing.write_json(args.out, result)


if __name__ == '__main__':
  main()
