"""Every one-step method of a distillation config: quality, speed-up and wall time.

  python benchmarks/distill.py [--config=distill_toy2d] [--data=ring8] \
      [--methods=diff_instruct,dmd,dmd2,sid,sim] [--config.x=y ...]
  python benchmarks/distill.py --methods=uni_instruct:divergence=jensen_shannon,fdistill
  python benchmarks/distill.py --methods=uni_instruct:neyman_chi2,uni_instruct:neyman_chi2:clip_norm=1.0
  python benchmarks/distill.py --config=distill_digits

Each method runs `configs/<config>.py:<method>[,<data>]` in a fresh process (as a user would, so
compile time counts); the script prints a line per method, writes
benchmarks/results/<config>[_<data>].json and docs/<config>[_<data>].png (every student's
samples beside the teacher's). Methods already in that JSON are kept, so a few methods can be
added later (their picture: docs/<config>[_<data>]_<methods>.png); runs with other --config.x=y
need their own --name.
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
RESULTS = ROOT / 'benchmarks' / 'results'
METRICS = ('swd', 'mmd', 'energy', 'nll', 'off_mode', 'mode_coverage', 'fid', 'kid', 'precision',
           'recall')


def main_py_args(config: str, spec: str, data: str, workdir: str, overrides) -> list:
  """The arguments of experiments/main.py that run method `spec` of configs/<config>.py:
  '<method>', then optionally ':<divergence>' (the config string's form, with the settings tuned
  for it), then ':<field>=<value>' for each field of config.method to set (e.g.
  'uni_instruct:neyman_chi2:clip_norm=1.0' or 'uni_instruct:divergence=jensen_shannon'); '' for
  configs without variants."""
  method, *fields = spec.split(':')
  if fields and '=' not in fields[0]:
    method = f'{method}:{fields.pop(0)}'
  if any('=' not in f for f in fields):
    raise SystemExit(f'{spec!r}: after <method>[:<divergence>] every part is <field>=<value>')
  variant = ','.join(v for v in (method, data) if v)
  return [f'--config={ROOT / "configs" / config}.py' + (f':{variant}' if variant else ''),
          f'--workdir={workdir}', *overrides, *(f'--config.method.{f}' for f in fields)]


def run_method(config: str, spec: str, data: str, workdir: str, overrides) -> dict:
  """Runs method `spec` (see main_py_args) of configs/<config>.py in a fresh process; its
  command, wall and CPU time (user + system, of the process and its children) and metrics."""
  args = main_py_args(config, spec, data, workdir, overrides)
  t0 = time.perf_counter()
  process = subprocess.Popen([sys.executable, str(ROOT / 'experiments' / 'main.py'), *args,
                              '--progress=false', '--config.train.compilation_cache=false'],
                             stdout=subprocess.DEVNULL)
  _, status, usage = os.wait4(process.pid, 0)  # this run's own CPU time, even among others
  wall = time.perf_counter() - t0
  if os.waitstatus_to_exitcode(status):
    raise SystemExit(f'{spec}: `{" ".join(process.args)}` failed with exit code '
                     f'{os.waitstatus_to_exitcode(status)}; its error is printed above')
  with open(os.path.join(workdir, 'metrics.json')) as f:
    metrics = json.load(f)
  return {'command': ' '.join(['python experiments/main.py', *args]).replace(workdir, '<dir>')
                     .replace(str(ROOT) + '/', ''),
          'wall_time_s': wall,
          'cpu_time_s': usage.ru_utime + usage.ru_stime,
          'metrics': metrics}


def ratios(metrics: dict) -> dict:
  """Student metrics over the teacher's (Heun, 35 NFE), and the one-step speed-up."""
  out = {f'{k}_vs_teacher': metrics[f'student/{k}@1'] / metrics[f'teacher/{k}@35']
         for k in ('swd', 'mmd', 'fid') if f'student/{k}@1' in metrics}
  out['speedup'] = metrics['student/samples_per_s@1'] / metrics['teacher/samples_per_s@35']
  return out


def panel_grid(rows: list, path: pathlib.Path, *, width: float, height: float, dpi: int,
               fontsize: int) -> None:
  """Saves a grid of sample pictures: `rows` of (title, PNG path) panels, each width x height
  inches; shorter rows leave their last cells empty."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from PIL import Image
  ncols = max(len(row) for row in rows)
  fig, axes = plt.subplots(len(rows), ncols, figsize=(width * ncols, height * len(rows)),
                           squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax_row, row in zip(axes, rows):
    for ax, (title, png) in zip(ax_row, row):
      image = Image.open(png)
      ax.imshow(image, cmap='gray' if image.mode == 'L' else None)
      ax.set_title(title, fontsize=fontsize)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def draw(workdirs: dict, path: pathlib.Path, ncols: int = 0) -> None:
  """The teacher's samples (35 NFE; the first run's) and every student's (1 NFE), side by side,
  in rows of `ncols` panels (0: one row)."""
  first = next(iter(workdirs.values()))
  panels = [('teacher, 35 NFE', os.path.join(first, 'samples_teacher_nfe35.png'))] + [
      (f'{name}, 1 NFE'.replace(':', '\n'), os.path.join(w, 'samples_student_nfe1.png'))
      for name, w in workdirs.items()]
  ncols = ncols or len(panels)
  rows = [panels[i:i + ncols] for i in range(0, len(panels), ncols)]
  lines = max(title.count('\n') + 1 for title, _ in panels)  # room for the longest title
  panel_grid(rows, path, width=3.2, height=3.55 + 0.25 * lines, dpi=110, fontsize=10)


def parse_args(description: str, methods: str, prefix: str = ''):
  """(args, --config.x=y overrides for every run, result name, root of the runs' workdirs) of a
  benchmark over the methods of one distillation config."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--config', default='distill_toy2d', help='a file of configs/')
  parser.add_argument('--data', default='ring8', help="'' for configs without a data variant")
  parser.add_argument('--methods', default=methods)
  parser.add_argument('--out', default=str(RESULTS), help='JSON folder (pictures go to docs/ '
                      'for the default, else here too)')
  parser.add_argument('--name', default='', help='of the JSON and picture; default: '
                      '<config>[_<data>]; give another one for runs with other --config.x=y')
  parser.add_argument('--workroot', default='', help='keep the runs here (a rerun resumes them); '
                      'default: a new temporary folder')
  args, overrides = parser.parse_known_args()
  if args.config != 'distill_toy2d':
    args.data = ''
  name = args.name or prefix + args.config + (f'_{args.data}' if args.data else '')
  path = pathlib.Path(args.out) / f'{name}.json'
  if path.exists():  # its methods are kept (save_results): they must share the overrides
    with open(path) as f:
      earlier = json.load(f)['overrides']
    if earlier != overrides:
      parser.error(f'{path} holds runs with the overrides {earlier}, not {overrides}: give '
                   'these runs another --name')
  return args, overrides, name, args.workroot or tempfile.mkdtemp(prefix=f'{name}_')


def save_results(args, overrides, name: str, results: dict, workdirs: dict, draw_fn,
                 **header) -> None:
  """Writes benchmarks/results/<name>.json and docs/<name>.png.

  Methods already in that JSON from an earlier run with the same overrides are kept (each method
  has its own date), so a benchmark can be completed a few methods at a time; the picture then
  shows only the methods run now and is written to docs/<name>_<method>_....png instead, so the
  committed picture of the earlier methods stays as it is.
  """
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f'{name}.json'
  today = time.strftime('%Y-%m-%d')
  methods = {}
  if path.exists():
    with open(path) as f:
      earlier = json.load(f)
    methods = {m: {'date': earlier.get('date'), **r} for m, r in earlier['methods'].items()}
  methods.update({m: {**r, 'date': today} for m, r in results.items()})
  with open(path, 'w') as f:
    json.dump({'config': args.config, 'data': args.data, 'overrides': overrides, **header,
               'cpu_count': os.cpu_count(), 'methods': methods}, f, indent=2, sort_keys=True)
  # 'uni_instruct:divergence=jensen_shannon' -> 'uni_instruct-jensen_shannon'
  label = lambda spec: '-'.join(f.split('=')[-1] for f in spec.split(':'))
  picture = name if set(methods) == set(results) else '_'.join([name, *map(label, results)])
  picture = (ROOT / 'docs' if out == RESULTS else out) / f'{picture}.png'
  draw_fn(workdirs, picture)
  print(f'wrote {path} and {picture}')


def main():
  args, overrides, name, root = parse_args(__doc__.splitlines()[0],
                                           'diff_instruct,dmd,dmd2,sid,sim')
  results, workdirs = {}, {}
  for method in args.methods.split(','):
    workdirs[method] = os.path.join(root, method.replace(':', '_'))
    r = run_method(args.config, method, args.data, workdirs[method], overrides)
    r.update(ratios(r['metrics']))
    results[method] = r
    m = r['metrics']
    print(f'{method:14s} ' + ' '.join(f'{k}={m[f"student/{k}@1"]:.4g}' for k in METRICS
                                      if f'student/{k}@1' in m)
          + ''.join(f' {k}={v:.2f}' for k, v in r.items() if k.endswith('teacher'))
          + f' speedup={r["speedup"]:.0f}x wall={r["wall_time_s"]:.0f}s'
          + f' cpu={r["cpu_time_s"]:.0f}s', flush=True)
  teacher = results[next(iter(results))]['metrics']
  print('teacher@35     ' + ' '.join(f'{k}={teacher[f"teacher/{k}@35"]:.4g}' for k in METRICS
                                     if f'teacher/{k}@35' in teacher))
  save_results(args, overrides, name, results, workdirs, draw)


if __name__ == '__main__':
  main()
