"""How far the two-sample metrics of a 2-D toy move between samples of one distribution, and
between evaluations of one trained run.

  python benchmarks/metric_noise.py [--data=ring8] [--sizes=2000,5000,20000] [--repeats=10] \
      [--out=benchmarks/results/metric_noise_ring8.json]
  python benchmarks/metric_noise.py --methods=diff_instruct,fdistill:divergence=reverse_kl \
      --workroot=<dir> [--eval_seeds=1234,1,2,3,4] [--config.x=y ...] [--out=<json>]
  python benchmarks/metric_noise.py --config=distill_digits --methods=uni_instruct,... \
      --workroot=<dir>
  python benchmarks/metric_noise.py --table=<json>,... [--runs=<m1>,...] \
      [--workroot=<dir> --picture=<png>]
  python benchmarks/metric_noise.py --table=<json>,... --by_seed [--runs=<m1>,...]

Without --methods, for each size N the script draws `--repeats` pairs of independent samples of
N points of the data and measures SWD, MMD^2 and the energy distance between them, as the final
evaluation does (onestep_jax.experiment.evaluation.low_dim_metrics). Their spread is the
resolution of a single evaluation: a student and a teacher whose metrics differ by less cannot
be told apart. With --methods, each method of configs/<--config>.py (distill_toy2d by default) is
trained once (as benchmarks/distill.py does, in the same <workroot>/<method> folders, so a finished
run of either script is reused) and evaluated once per evaluation seed, which redraws the
teacher's, the student's and the reference's samples (for an image set: which half of the held-out
images is the reference); the script reports each metric's mean and spread over the seeds, and
the student's mean over the teacher's mean (SWD and MMD, or FID) with its standard error
and the range of the per-seed ratios. With --by_seed the table has one row per method over its
training seeds (the files' `--config.seed=N`, 0 without): each seed's ratios, their mean over the
seeds with its standard error (the seeds' spread, which holds the evaluations' too), and the gate
verdicts on those means.
"""
import argparse
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

from onestep_jax.data import get_dataset
from onestep_jax.experiment.evaluation import low_dim_metrics
from onestep_jax.train.metrics import read_metrics
from distill import draw, run_method
from step_timing import write_json

METRICS = ('swd', 'mmd', 'energy')
# the per-model metrics of a run's final evaluation: 2-D data (with a known mixture), images
LOW_DIM_METRICS = METRICS + ('off_mode', 'nll', 'mode_coverage')
IMAGE_METRICS = ('fid', 'kid', 'precision', 'recall')
# reported as the student's over the teacher's; not KID, which is unbiased and so may be near or
# below zero for a good teacher (digits: -3.8 ± 17.5 over five evaluations)
RATIO_METRICS = ('swd', 'mmd', 'fid')


def spread(data, size: int, repeats: int) -> dict:
  """Mean, standard deviation, range and values of each metric over `repeats` pairs."""
  values = {k: [] for k in METRICS}
  t0 = time.perf_counter()
  for r in range(repeats):
    x = data.sample(size, seed=2 * r)
    y = data.sample(size, seed=2 * r + 1)
    m = low_dim_metrics(x, y, key=jax.random.PRNGKey(r))
    for k in METRICS:
      values[k].append(m[k])
  out = {k: summary(v) for k, v in values.items()}
  out['seconds_per_pair'] = (time.perf_counter() - t0) / repeats
  return out


def summary(values) -> dict:
  return {'mean': float(np.mean(values)), 'std': float(np.std(values, ddof=1)),
          'min': float(np.min(values)), 'max': float(np.max(values)), 'values': list(values)}


def evaluations(method: str, *, config: str, data: str, workroot: str, seeds,
                overrides) -> dict:
  """One run of `method` of configs/<config>.py, evaluated once per seed: per-seed metrics, their
  summaries, and `<metric>_vs_teacher` for those of RATIO_METRICS both models have."""
  workdir = os.path.join(workroot, method.replace(':', '_'))
  runs = [run_method(config, method, data, workdir, [*overrides, f'--config.eval.seed={seed}'])
          for seed in seeds]
  out = {'command': runs[0]['command'], 'cpu_time_s': [r['cpu_time_s'] for r in runs],
         'metrics': {}}
  for name in ('student/{}@1', 'teacher/{}@35', 'data/{}_floor'):
    for k in LOW_DIM_METRICS + IMAGE_METRICS:
      key = name.format(k)
      if key in runs[0]['metrics']:
        out['metrics'][key] = summary([r['metrics'][key] for r in runs])
  for k in ratio_metrics(out['metrics']):
    out[f'{k}_vs_teacher'] = ratio_of_means(out['metrics'][f'student/{k}@1']['values'],
                                            out['metrics'][f'teacher/{k}@35']['values'])
  out['training'] = gradient_norms(os.path.join(workdir, 'metrics.jsonl'))
  return out


def gradient_norms(path: str) -> dict:
  """From a run's metrics.jsonl: each '<phase>/grad_norm_max/<group>' over the whole run (its
  largest update's norm) and each '<phase>/clipped/<group>' averaged over the records (the
  fraction of updates the clip shortened); {} for runs logged before these were, or without
  a metrics.jsonl."""
  records = read_metrics(path) if os.path.isfile(path) else []
  keys = sorted({k for r in records for k in r if '/grad_norm_max/' in k or '/clipped/' in k})
  reduce = lambda k: max if '/grad_norm_max/' in k else np.mean
  return {k: float(reduce(k)([r[k] for r in records if k in r])) for k in keys}


def ratio_metrics(metrics: dict) -> list:
  """Those of RATIO_METRICS that both the student (1 NFE) and the teacher (35 NFE) have."""
  return [k for k in RATIO_METRICS if f'student/{k}@1' in metrics and f'teacher/{k}@35' in metrics]


def ratio_of_means(student, teacher) -> dict:
  """mean(student) / mean(teacher) over the evaluation seeds, its standard error (delta method,
  with the covariance the shared reference sample gives each seed's pair), and per-seed ratios."""
  s, t = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
  ratio = s.mean() / t.mean()
  cov = np.cov(s, t) / len(s)  # covariance of the two means
  var = ratio**2 * (cov[0, 0] / s.mean()**2 + cov[1, 1] / t.mean()**2
                    - 2 * cov[0, 1] / (s.mean() * t.mean()))
  return {'ratio_of_means': float(ratio), 'standard_error': float(np.sqrt(max(var, 0.0))),
          'per_seed': list(s / t)}


GATES = {'swd': 1.5, 'mmd': 3.0}  # issues 7 and 8: student at most 1.5x / 3x the teacher's


def gate_verdict(ratios: dict) -> str:
  """Each gate passed or failed by more than one standard error, or within one of it."""
  notes = []
  for k, gate in GATES.items():
    r, se = ratios[k]['ratio_of_means'], ratios[k]['standard_error']
    if abs(r - gate) < se:
      notes.append(f'{k.upper()} {"over" if r > gate else "under"} its gate, within 1 se')
    elif r > gate:
      notes.append(f'fails {k.upper()}')
  return '; '.join(notes) or 'passes both by more than 1 se'


def read_runs_file(path: str) -> dict:
  """A JSON file written with --methods; clear errors for a missing file or one without runs."""
  if not os.path.isfile(path):
    raise SystemExit(f'--table: no file {path}')
  with open(path) as f:
    written = json.load(f)
  if 'methods' not in written:
    raise SystemExit(f'--table: {path} holds no runs (it was not written with --methods)')
  return written


def split_labels(text: str) -> list:
  """--runs' labels: `text` split at the commas outside brackets and parentheses, so that a label
  such as `m [--config.method.ratio_range=(0.5,2.0)]` stays whole."""
  labels, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    depth += (ch in '([') - (ch in ')]')
    if ch == ',' and depth == 0:
      labels.append(text[start:i])
      start = i + 1
  return labels + [text[start:]]


def selected_rows(rows: dict, only) -> dict:
  """`rows` (by label), or only the labels `only` in that order; --runs naming an absent label
  stops with the labels there are."""
  if not only:
    return rows
  missing = [m for m in only if m not in rows]
  if missing:
    raise SystemExit(f'--runs: {missing} not in the --table files; they hold {sorted(rows)}')
  return {m: rows[m] for m in only}


def load_rows(paths) -> dict:
  """The runs of JSON files written with --methods, by label: the method, followed by its file's
  overrides in brackets (e.g. `sid [--config.seed=1]`) when files with other overrides also hold
  that method; one label in several files: the last file's run. Returns {label: (method, run)}."""
  files = []
  for path in paths:
    written = read_runs_file(path)
    files.append((' '.join(written.get('overrides', [])), written['methods']))
  settings = {}  # method -> the overrides it was run with
  for overrides, methods in files:
    for method in methods:
      settings.setdefault(method, set()).add(overrides)
  rows = {}
  for overrides, methods in files:
    for method, run in methods.items():
      label = f'{method} [{overrides}]' if len(settings[method]) > 1 and overrides else method
      rows[label] = (method, run)
  return rows


def print_table(paths, only=None) -> dict:
  """Prints a Markdown table of the runs in JSON files written with --methods (labelled as
  load_rows labels them), or of the runs `only`, in that order; returns {label: method}. Runs of
  2-D data get the ring's columns and gate verdicts, runs on images FID, KID, precision and
  recall; one table holds one kind."""
  runs = load_rows(paths)
  runs = selected_rows(runs, only)
  kinds = {label: 'image' if 'student/fid@1' in r['metrics'] else 'low_dim'
           for label, (_, r) in runs.items()}
  if len(set(kinds.values())) > 1:
    raise SystemExit(f'--table: runs on images and on 2-D data cannot share a table: {kinds}')
  header, row = (IMAGE_HEADER, image_row) if 'image' in kinds.values() else (LOW_DIM_HEADER,
                                                                               low_dim_row)
  print(header)
  print('|' + ' --- |' * (header.count('|') - 1))
  for label, (_, r) in runs.items():
    print(f'| `{label}` | ' + ' | '.join(row(r['metrics'])) + ' |')
  return {label: method for label, (method, _) in runs.items()}


SEED_HEADER = (
    '| run | training seeds | SWD ratio per seed | MMD ratio per seed | SWD ratio, mean ± se | '
    'MMD ratio, mean ± se | off-mode (mean) | NLL (mean) | modes covered (lowest) | '
    'seeds passing both gates | against the gates (seed means) |')


def training_seed(overrides) -> tuple[int, tuple]:
  """The training seed among a file's overrides (`--config.seed=N`; 0, the configs' default,
  without one) and the other overrides."""
  seeds = [o for o in overrides if o.startswith('--config.seed=')]
  rest = tuple(o for o in overrides if not o.startswith('--config.seed='))
  return (int(seeds[-1].split('=', 1)[1]) if seeds else 0), rest


def print_seed_table(paths, only=None) -> dict:
  """Prints a Markdown table with one row per method and overrides other than the seed (labelled
  as load_rows labels runs: the overrides in brackets only where the method was run with others
  too) over the training seeds its runs in JSON files written with --methods have (one per seed:
  the last file's), or of the rows `only`, in that order; returns {label: {seed: run}}."""
  found = {}
  for path in paths:
    written = read_runs_file(path)
    seed, rest = training_seed(written.get('overrides', []))
    for method, run in written['methods'].items():
      if 'student/swd@1' not in run['metrics']:
        raise SystemExit(f'--by_seed: {path} holds runs on images; it tables 2-D runs')
      found.setdefault((method, ' '.join(rest)), {})[seed] = run
  settings = [method for method, _ in found]
  groups = {f'{method} [{rest}]' if rest and settings.count(method) > 1 else method: runs
            for (method, rest), runs in found.items()}
  groups = selected_rows(groups, only)
  print(SEED_HEADER)
  print('|' + ' --- |' * (SEED_HEADER.count('|') - 1))
  for label, runs in groups.items():
    print(f'| `{label}` | ' + ' | '.join(seed_row(dict(sorted(runs.items())))) + ' |')
  return groups


def seed_row(runs: dict) -> list:
  """The cells of SEED_HEADER of one method's runs {seed: run}."""
  per_seed = {k: [ratio_of_means(r['metrics'][f'student/{k}@1']['values'],
                                 r['metrics'][f'teacher/{k}@35']['values'])['ratio_of_means']
                  for r in runs.values()] for k in GATES}
  means = {k: {'ratio_of_means': float(np.mean(v)),
               'standard_error': float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1
                                 else float('nan')} for k, v in per_seed.items()}
  passing = sum(all(per_seed[k][i] <= gate for k, gate in GATES.items())
                for i in range(len(runs)))
  student = lambda k: [r['metrics'][f'student/{k}@1'] for r in runs.values()]
  modes = student('mode_coverage') if all('student/mode_coverage@1' in r['metrics']
                                          for r in runs.values()) else None
  return ([', '.join(map(str, runs)),
           *(' / '.join(f'{v:.2f}' for v in per_seed[k]) for k in GATES),
           *(f'{m["ratio_of_means"]:.2f}' + (f' ± {m["standard_error"]:.2f}' if len(runs) > 1
                                              else '') for m in means.values()),
           f'{np.mean([v["mean"] for v in student("off_mode")]):.3f}',
           f'{np.mean([v["mean"] for v in student("nll")]):.2f}',
           f'{min(v["min"] for v in modes):.2f}' if modes else 'not recorded',
           f'{passing} of {len(runs)}',
           gate_verdict(means) if len(runs) > 1 else 'one seed: no spread'])


def mean_sd_and_ratio(m: dict, k: str, digits: int) -> tuple[list, dict]:
  """The 'student mean ± sd / teacher mean ± sd' and 'ratio of means ± se' cells of metric k, and
  that ratio (ratio_of_means)."""
  st, te = m[f'student/{k}@1'], m[f'teacher/{k}@35']
  q = ratio_of_means(st['values'], te['values'])
  return [f'{st["mean"]:.{digits}f} ± {st["std"]:.{digits}f} / '
          f'{te["mean"]:.{digits}f} ± {te["std"]:.{digits}f}',
          f'{q["ratio_of_means"]:.2f} ± {q["standard_error"]:.2f}'], q


LOW_DIM_HEADER = (
    '| run | SWD: student / teacher (mean ± sd) | SWD ratio ± se | MMD: student / teacher '
    '(mean ± sd) | MMD ratio ± se | off-mode | NLL | mode coverage (lowest) | '
    'against the gates (SWD <= 1.5x, MMD <= 3x) |')
IMAGE_HEADER = (
    '| run | FID: student / teacher (mean ± sd) | FID ratio ± se | KID: student / teacher '
    '(mean ± sd) | precision | recall | data floor FID |')


def low_dim_row(m: dict) -> list:
  """The cells of LOW_DIM_HEADER of one run's metrics."""
  swd_cells, swd = mean_sd_and_ratio(m, 'swd', 4)
  mmd_cells, mmd = mean_sd_and_ratio(m, 'mmd', 5)
  cells, ratios = swd_cells + mmd_cells, {'swd': swd, 'mmd': mmd}
  modes = m.get('student/mode_coverage@1')
  return cells + [f'{m["student/off_mode@1"]["mean"]:.3f}', f'{m["student/nll@1"]["mean"]:.2f}',
                  f'{modes["min"]:.2f}' if modes else 'not recorded', gate_verdict(ratios)]


def image_row(m: dict) -> list:
  """The cells of IMAGE_HEADER of one run's metrics."""
  floor = m.get('data/fid_floor')
  kid_s, kid_t = m['student/kid@1'], m['teacher/kid@35']
  return (mean_sd_and_ratio(m, 'fid', 1)[0]
          + [f'{kid_s["mean"]:.1f} ± {kid_s["std"]:.1f} / {kid_t["mean"]:.1f} ± {kid_t["std"]:.1f}']
          + [f'{m[f"student/{k}@1"]["mean"]:.3f} ± {m[f"student/{k}@1"]["std"]:.3f}'
             for k in ('precision', 'recall')]
          + [f'{floor["mean"]:.1f} ± {floor["std"]:.1f}' if floor else 'not recorded'])


def run_methods(args, overrides) -> None:
  seeds = [int(s) for s in args.eval_seeds.split(',')]
  if len(set(seeds)) < 2:
    raise SystemExit(f'--eval_seeds needs at least two different seeds, got {args.eval_seeds}')
  results = {}
  for method in args.methods.split(','):
    results[method] = r = evaluations(method, config=args.config, data=args.data,
                                      workroot=args.workroot, seeds=seeds, overrides=overrides)
    m = r['metrics']
    print(f'{method}: ' + '; '.join(
        f'{k} student {m[f"student/{k}@1"]["mean"]:.5g} +- {m[f"student/{k}@1"]["std"]:.3g}, '
        f'teacher {m[f"teacher/{k}@35"]["mean"]:.5g} +- {m[f"teacher/{k}@35"]["std"]:.3g}, '
        f'ratio of means {r[f"{k}_vs_teacher"]["ratio_of_means"]:.2f} '
        f'+- {r[f"{k}_vs_teacher"]["standard_error"]:.2f} (per seed '
        f'{min(r[f"{k}_vs_teacher"]["per_seed"]):.2f} to '
        f'{max(r[f"{k}_vs_teacher"]["per_seed"]):.2f})' for k in ratio_metrics(m))
          + ''.join(f'; {k} {m[f"student/{k}@1"]["mean"]:.3f}'
                    for k in ('off_mode', 'precision', 'recall') if f'student/{k}@1' in m),
          flush=True)
  out = args.out or f'benchmarks/results/metric_noise_{args.data or args.config}_runs.json'
  command = ' '.join(['python benchmarks/metric_noise.py', *sys.argv[1:]])
  write_json(out, {'command': command.replace(args.workroot, '<dir>'),
                   'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                   'config': args.config, 'data': args.data, 'eval_seeds': seeds,
                   'overrides': overrides, 'methods': results})


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data', default='ring8', help='of distill_toy2d (--methods), or the '
                      'data whose own spread is measured (no --methods)')
  parser.add_argument('--config', default='distill_toy2d', help='with --methods: a file of '
                      'configs/, e.g. distill_digits')
  parser.add_argument('--sizes', default='2000,5000,20000')
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--methods', default='', help='methods of configs/<--config>.py')
  parser.add_argument('--workroot', default='', help='the runs of --methods (reused if there)')
  parser.add_argument('--eval_seeds', default='1234,1,2,3,4')
  parser.add_argument('--out', default=None)
  parser.add_argument('--table', default='', help='JSON files of --methods runs: print a table')
  parser.add_argument('--runs', default='', help='with --table: only these runs, in this order')
  parser.add_argument('--by_seed', action='store_true', help='with --table: one row per method '
                      'over its training seeds')
  parser.add_argument('--picture', default='', help='with --table and --workroot: a PNG of the '
                      "teacher's and each run's samples (their last evaluation)")
  args, overrides = parser.parse_known_args()
  if args.by_seed and (not args.table or args.picture):
    parser.error('--by_seed goes with --table and without --picture')
  if args.table and args.by_seed:
    print_seed_table(args.table.split(','), split_labels(args.runs) if args.runs else None)
    return None
  if args.table:
    methods = print_table(args.table.split(','), split_labels(args.runs) if args.runs else None)
    if args.picture:
      if not args.workroot:
        parser.error('--picture needs the --workroot of the runs')
      shared = sorted(label for label, m in methods.items()
                      if list(methods.values()).count(m) > 1)
      if shared:
        parser.error(f'--picture: the rows {shared} share a run directory name in --workroot; '
                     'choose one of them with --runs')
      draw({label: os.path.join(args.workroot, m.replace(':', '_'))
            for label, m in methods.items()}, pathlib.Path(args.picture), ncols=6)
    return None
  if args.methods:
    if not args.workroot:
      parser.error('--methods needs --workroot')
    if args.config != 'distill_toy2d':
      args.data = ''  # the image configs have no data variant
    return run_methods(args, overrides)
  if overrides:
    parser.error(f'unknown arguments {overrides}')
  if args.config != 'distill_toy2d':
    parser.error('--config goes with --methods; without it the script measures --data itself')
  data = get_dataset(args.data)
  results = {}
  for size in (int(s) for s in args.sizes.split(',')):
    results[size] = r = spread(data, size, args.repeats)
    print(f'{args.data}, {size} points per side, {args.repeats} pairs '
          f'({r["seconds_per_pair"]:.1f} s per pair): ' + '; '.join(
              f'{k} {r[k]["mean"]:.5f} +- {r[k]["std"]:.5f} [{r[k]["min"]:.5f}, {r[k]["max"]:.5f}]'
              for k in METRICS), flush=True)
  write_json(args.out or f'benchmarks/results/metric_noise_{args.data}.json', {'command': 'python benchmarks/metric_noise.py --data={} --sizes={} '
                              '--repeats={}'.format(args.data, args.sizes, args.repeats),
                   'data': args.data, 'repeats': args.repeats, 'sizes': results})


if __name__ == '__main__':
  main()
