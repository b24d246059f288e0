"""Every one-step method of a distillation config: quality, speed-up and wall time.

  python benchmarks/distill.py [--config=distill_toy2d] [--data=ring8] \
      [--methods=diff_instruct,dmd,dmd2,sid,sim] [--config.x=y ...]
  python benchmarks/distill.py --config=distill_digits

Each method runs `configs/<config>.py:<method>[,<data>]` in a fresh process (as a user would, so
compile time counts); the script prints a line per method, writes
benchmarks/results/<config>[_<data>].json and docs/<config>[_<data>].png (every student's
samples beside the teacher's).
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
METRICS = ('swd', 'mmd', 'energy', 'nll', 'off_mode', 'mode_coverage', 'fid', 'kid', 'precision',
           'recall')


def run_method(config: str, variant: str, workdir: str, overrides) -> dict:
  cmd = [sys.executable, str(ROOT / 'experiments' / 'main.py'),
         f'--config={ROOT / "configs" / config}.py:{variant}', f'--workdir={workdir}',
         '--progress=false', '--config.train.compilation_cache=false', *overrides]
  t0 = time.perf_counter()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  wall = time.perf_counter() - t0
  with open(os.path.join(workdir, 'metrics.json')) as f:
    metrics = json.load(f)
  return {'command': ' '.join(['python experiments/main.py',
                               f'--config=configs/{config}.py:{variant}', '--workdir=<dir>',
                               *overrides]),
          'wall_time_s': wall, 'metrics': metrics}


def ratios(metrics: dict) -> dict:
  """Student metrics over the teacher's (Heun, 35 NFE), and the one-step speed-up."""
  out = {f'{k}_vs_teacher': metrics[f'student/{k}@1'] / metrics[f'teacher/{k}@35']
         for k in ('swd', 'mmd', 'fid') if f'student/{k}@1' in metrics}
  out['speedup'] = metrics['student/samples_per_s@1'] / metrics['teacher/samples_per_s@35']
  return out


def draw(workdirs: dict, path: pathlib.Path) -> None:
  """The teacher's samples (35 NFE) and every student's (1 NFE), side by side."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from PIL import Image
  first = next(iter(workdirs.values()))
  panels = [('teacher, 35 NFE', os.path.join(first, 'samples_teacher_nfe35.png'))] + [
      (f'{name}, 1 NFE', os.path.join(w, 'samples_student_nfe1.png'))
      for name, w in workdirs.items()]
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
  for ax, (title, png) in zip(axes, panels):
    image = Image.open(png)
    ax.imshow(image, cmap='gray' if image.mode == 'L' else None)
    ax.set_title(title, fontsize=10)
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def parse_args(description: str, methods: str, prefix: str = ''):
  """(args, --config.x=y overrides for every run, result name, root of the runs' workdirs) of a
  benchmark over the methods of one distillation config."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--config', default='distill_toy2d', help='a file of configs/')
  parser.add_argument('--data', default='ring8', help="'' for configs without a data variant")
  parser.add_argument('--methods', default=methods)
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results'))
  parser.add_argument('--workroot', default='', help='keep the runs here (a rerun resumes them); '
                      'default: a new temporary folder')
  args, overrides = parser.parse_known_args()
  if args.config != 'distill_toy2d':
    args.data = ''
  name = prefix + args.config + (f'_{args.data}' if args.data else '')
  return args, overrides, name, args.workroot or tempfile.mkdtemp(prefix=f'{name}_')


def main():
  args, overrides, name, root = parse_args(__doc__.splitlines()[0],
                                           'diff_instruct,dmd,dmd2,sid,sim')
  results, workdirs = {}, {}
  for method in args.methods.split(','):
    workdirs[method] = os.path.join(root, method)
    variant = method + (f',{args.data}' if args.data else '')
    r = run_method(args.config, variant, workdirs[method], overrides)
    r.update(ratios(r['metrics']))
    results[method] = r
    m = r['metrics']
    print(f'{method:14s} ' + ' '.join(f'{k}={m[f"student/{k}@1"]:.4g}' for k in METRICS
                                      if f'student/{k}@1' in m)
          + ''.join(f' {k}={v:.2f}' for k, v in r.items() if k.endswith('teacher'))
          + f' speedup={r["speedup"]:.0f}x wall={r["wall_time_s"]:.0f}s', flush=True)
  teacher = results[next(iter(results))]['metrics']
  print('teacher@35     ' + ' '.join(f'{k}={teacher[f"teacher/{k}@35"]:.4g}' for k in METRICS
                                     if f'teacher/{k}@35' in teacher))
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  with open(out / f'{name}.json', 'w') as f:
    json.dump({'config': args.config, 'data': args.data, 'overrides': overrides,
               'date': time.strftime('%Y-%m-%d'), 'cpu_count': os.cpu_count(),
               'methods': results}, f, indent=2, sort_keys=True)
  draw(workdirs, ROOT / 'docs' / f'{name}.png')
  print(f'wrote {out / f"{name}.json"} and docs/{name}.png')


if __name__ == '__main__':
  main()
