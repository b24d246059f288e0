"""Every one-step method on a 2-D mixture with its exact teacher: quality and wall time.

  python benchmarks/distill_toy2d.py [--toy=ring8] [--methods=diff_instruct,dmd,dmd2,sid,sim]

Each method runs `configs/distill_toy2d.py:<method>,<toy>` in a fresh process (as a user would,
so compile time counts), then the script prints a table, writes
benchmarks/results/distill_<toy>.json and a picture of all students beside the teacher.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = ('swd', 'mmd', 'energy', 'nll', 'off_mode', 'mode_coverage')


def run_method(method: str, toy: str, workdir: str, overrides) -> dict:
  cmd = [sys.executable, str(ROOT / 'experiments' / 'main.py'),
         f'--config={ROOT / "configs" / "distill_toy2d.py"}:{method},{toy}',
         f'--workdir={workdir}', '--progress=false', '--config.train.compilation_cache=false',
         *overrides]
  t0 = time.perf_counter()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  wall = time.perf_counter() - t0
  with open(os.path.join(workdir, 'metrics.json')) as f:
    metrics = json.load(f)
  return {'command': ' '.join(['python experiments/main.py',
                               f'--config=configs/distill_toy2d.py:{method},{toy}',
                               '--workdir=<dir>', *overrides]),
          'wall_time_s': wall, 'metrics': metrics}


def ratios(metrics: dict) -> dict:
  """Student metrics over the teacher's (Heun, 35 NFE) for swd and mmd."""
  return {f'{k}_vs_teacher': metrics[f'student/{k}@1'] / metrics[f'teacher/{k}@35']
          for k in ('swd', 'mmd')}


def draw(results: dict, workdirs: dict, path: pathlib.Path) -> None:
  import numpy as np
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from PIL import Image
  names = list(results)
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4))
  for ax, name in zip(np.atleast_1d(axes), names):
    ax.imshow(Image.open(os.path.join(workdirs[name], 'samples_student_nfe1.png')))
    ax.set_title(name, fontsize=10)
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--toy', default='ring8')
  parser.add_argument('--methods', default='diff_instruct,dmd,dmd2,sid,sim')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results'))
  parser.add_argument('overrides', nargs='*', help='extra --config.x=y flags for every run')
  args = parser.parse_args()
  results, workdirs = {}, {}
  root = tempfile.mkdtemp(prefix='distill_toy2d_')
  for method in args.methods.split(','):
    workdirs[method] = os.path.join(root, method)
    r = run_method(method, args.toy, workdirs[method], args.overrides)
    r.update(ratios(r['metrics']))
    results[method] = r
    m = r['metrics']
    print(f'{method:14s} ' + ' '.join(f'{k}={m[f"student/{k}@1"]:.4g}' for k in METRICS
                                      if f'student/{k}@1' in m)
          + f' swd/teacher={r["swd_vs_teacher"]:.2f} mmd/teacher={r["mmd_vs_teacher"]:.2f}'
          + f' wall={r["wall_time_s"]:.0f}s', flush=True)
  teacher = results[next(iter(results))]['metrics']
  print('teacher@35     ' + ' '.join(f'{k}={teacher[f"teacher/{k}@35"]:.4g}' for k in METRICS
                                     if f'teacher/{k}@35' in teacher))
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  with open(out / f'distill_{args.toy}.json', 'w') as f:
    json.dump({'toy': args.toy, 'date': time.strftime('%Y-%m-%d'), 'cpu_count': os.cpu_count(),
               'methods': results}, f, indent=2, sort_keys=True)
  draw(results, workdirs, ROOT / 'docs' / f'one_step_{args.toy}.png')
  print(f'wrote {out / f"distill_{args.toy}.json"} and docs/one_step_{args.toy}.png')


if __name__ == '__main__':
  main()
