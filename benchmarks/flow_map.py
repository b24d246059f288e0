"""Few-step flow-map methods on a distillation config: quality at 1, 2, 4 and 8 sampling steps.

  python benchmarks/flow_map.py [--config=distill_toy2d] [--data=ring8] \
      [--methods=ayf_emd,ayf_lmd,cd,pd,scd] [--workroot=<dir>] [--config.x=y ...]

Each method runs `configs/<config>.py:<method>[,<data>]` in a fresh process (benchmarks/distill.py's
`run_method`); the script prints one line per method and step count, writes
benchmarks/results/flow_map_<config>[_<data>].json (every metric of every run, the teacher's at 35
NFE included) and docs/flow_map_<config>[_<data>].png: a grid of samples, one row per method, one
column per step count, the teacher's in the last column.
"""
import os
import pathlib

from distill import panel_grid, parse_args, run_method, save_results

STEPS = (1, 2, 4, 8)
METRICS = ('swd', 'mmd', 'energy', 'nll', 'off_mode', 'mode_coverage', 'fid', 'kid')


def table(results: dict) -> list[str]:
  """Lines 'method@steps metric=value ...' for every student and the teacher (35 NFE)."""
  lines = []
  for method, r in results.items():
    m = r['metrics']
    for n in STEPS:
      lines.append(f'{method + "@" + str(n):12s} ' + ' '.join(
          f'{k}={m[f"student/{k}@{n}"]:.4g}' for k in METRICS if f'student/{k}@{n}' in m))
  m = next(iter(results.values()))['metrics']
  lines.append('teacher@35   ' + ' '.join(f'{k}={m[f"teacher/{k}@35"]:.4g}' for k in METRICS
                                          if f'teacher/{k}@35' in m))
  return lines


def draw(workdirs: dict, path: pathlib.Path) -> None:
  """Rows: methods; columns: the student's samples at 1/2/4/8 steps, then the teacher's."""
  columns = [(f'{n} step{"s" if n > 1 else ""}', f'samples_student_nfe{n}.png') for n in STEPS]
  columns.append(('teacher, 35 NFE', 'samples_teacher_nfe35.png'))
  rows = [[(title if 'teacher' in png else f'{method}, {title}', os.path.join(workdir, png))
           for title, png in columns] for method, workdir in workdirs.items()]
  panel_grid(rows, path, width=2.6, height=2.7, dpi=60, fontsize=9)


def main():
  args, overrides, name, root = parse_args(__doc__.splitlines()[0], 'ayf_emd,ayf_lmd,cd,pd,scd',
                                           prefix='flow_map_')
  results, workdirs = {}, {}
  for method in args.methods.split(','):
    workdirs[method] = os.path.join(root, method.replace(':', '_'))
    results[method] = run_method(args.config, method, args.data, workdirs[method], overrides)
    print('\n'.join(table({method: results[method]})[:-1])
          + f'\n{"":12s} wall={results[method]["wall_time_s"]:.0f}s'
          + f' cpu={results[method]["cpu_time_s"]:.0f}s', flush=True)
  print(table(results)[-1])
  save_results(args, overrides, name, results, workdirs, draw, steps=list(STEPS))


if __name__ == '__main__':
  main()
