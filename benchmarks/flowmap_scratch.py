"""Flow maps trained from scratch (MeanFlow, shortcut) against an EDM teacher trained for the same
wall time, sampled with 1, 2 and 4 steps, on a 2-D toy (default: the 8-Gaussian ring).

  taskset -c 1 python benchmarks/flowmap_scratch.py --workroot=<dir> [--data=ring8] \
      [--methods=meanflow,meanflow:weight_p=0.0,shortcut] [--config.x=y ...]

Each flow map runs `configs/flowmap_toy2d.py:<method>[,<data>]` in a fresh process
(benchmarks/distill.py's `run_method`; --config.x=y go to these runs only). The teacher
(`configs/teacher_toy2d.py:<data>`) then trains in segments, each a fresh process that resumes the
previous one with a larger train.num_steps, until the sum of their `train_time_s` reaches each flow
map's `train_time_s` (within TOLERANCE below it): a segment's step count is its predecessor's
steady steps/s (metrics.jsonl, compile excluded) times the time still missing, less the
predecessor's compile overhead; the first segment (CALIBRATION_STEPS) only measures them. The
teacher's learning rate is constant after its ramp-up and its EMA depends only on the samples
seen, so a snapshot after N steps is the teacher of a run of N steps. Each snapshot's export is
copied to <workroot>/teacher_<steps>steps and evaluated there, on the runs' held-out reference,
sample count and metric seed (`experiment/evaluation.py`, as the CLI does): Euler on its Karras
grid (`teacher_euler`, NFE = steps, the last step from sigma_min to 0), Euler on the Karras grid
of one more step without its sigma_min level (`teacher_euler_nomin`, every NFE above sigma_min)
and Heun at 35 NFE (`teacher`, the samples and numbers of the CLI's own evaluation).
Writes benchmarks/results/flowmap_scratch_<data>.json and docs/flowmap_scratch_<data>.png (rows:
flow maps, then the teacher snapshots; columns: 1, 2, 4 steps, then 8 steps or Heun 35 NFE).
A rerun with the same --workroot reuses finished runs and segments.
"""
import argparse
import json
import os
import pathlib
import shutil

from distill import RESULTS, panel_grid, run_method, save_results

from onestep_jax.experiment.evaluation import write_json  # atomic: a killed rerun resumes

STEPS = (1, 2, 4)
METRICS = ('swd', 'mmd', 'energy', 'nll', 'off_mode', 'mode_coverage')
CONFIG = 'flowmap_toy2d'
TEACHER_CONFIG = 'teacher_toy2d'
CALIBRATION_STEPS = 1000
MIN_SEGMENT_STEPS = 200  # so that a segment logs at least twice (log_every 100)
TOLERANCE = 0.02  # a teacher snapshot's training time may fall this fraction short of its target


def load_json(path):
  with open(path) as f:
    return json.load(f)


def run_once(config: str, spec: str, data: str, workdir: str, overrides) -> dict:
  """`run_method`, or its record (<workdir>/benchmark_run.json) from an earlier call."""
  record = os.path.join(workdir, 'benchmark_run.json')
  if os.path.exists(record):
    return load_json(record)
  r = run_method(config, spec, data, workdir, overrides)
  write_json(record, r)
  return r


def steady_rate(workdir: str, after_step: int, train_time_s: float) -> tuple[float, float]:
  """(steps/s between the first and last metrics.jsonl lines after `after_step`, the seconds of
  the segment's `train_time_s` that this rate does not explain: compile and first steps)."""
  from onestep_jax.train.metrics import read_metrics
  records = [r for r in read_metrics(os.path.join(workdir, 'metrics.jsonl'))
             if r['step'] > after_step]
  first, last = records[0], records[-1]
  rate = (last['step'] - first['step']) / (last['time'] - first['time'])
  return rate, train_time_s - (last['step'] - after_step) / rate


def train_teacher(root: str, data: str, targets: list[float]) -> dict:
  """Trains the teacher in segments to each target training time (seconds, ascending) and
  evaluates a snapshot at each; {target: snapshot record}."""
  workdir = os.path.join(root, 'teacher')
  log_path = os.path.join(root, 'teacher_segments.json')
  segments = load_json(log_path) if os.path.exists(log_path) else []
  snapshots, used = {}, 0  # segments[:used] make the snapshot of the current target
  for target in targets:
    while not used or sum(s['train_time_s'] for s in segments[:used]) < target * (1 - TOLERANCE):
      if used < len(segments):  # from an earlier call
        used += 1
        continue
      done = segments[-1]['steps'] if segments else 0
      if segments:
        elapsed = sum(s['train_time_s'] for s in segments)
        last = segments[-1]
        steps = done + max(MIN_SEGMENT_STEPS,
                           round(last['steps_per_s'] * (target - elapsed - last['overhead_s'])))
      else:
        steps = CALIBRATION_STEPS
      r = run_method(TEACHER_CONFIG, '', data, workdir, [f'--config.train.num_steps={steps}'])
      rate, overhead = steady_rate(workdir, done, r['metrics']['train_time_s'])
      segments.append({'steps': steps, 'train_time_s': r['metrics']['train_time_s'],
                       'steps_per_s': rate, 'overhead_s': overhead, **r})
      used += 1
      write_json(log_path, segments)
      print(f'teacher segment to {steps} steps: train {r["metrics"]["train_time_s"]:.1f}s '
            f'({rate:.1f} steps/s, {overhead:.1f}s overhead), wall {r["wall_time_s"]:.0f}s, '
            f'cpu {r["cpu_time_s"]:.0f}s', flush=True)
    segments_now = segments[:used]
    steps = segments_now[-1]['steps']
    snapshot = os.path.join(root, f'teacher_{steps}steps')
    if not os.path.exists(os.path.join(snapshot, 'export')):
      if used < len(segments):
        raise FileNotFoundError(f'{snapshot} is missing and {workdir} trained on: start afresh')
      shutil.copytree(os.path.join(workdir, 'export'), os.path.join(snapshot, 'export'))
      shutil.copy(os.path.join(workdir, 'config.json'), snapshot)
      shutil.copy(os.path.join(workdir, 'metrics.json'), snapshot)  # the CLI's, at `steps`
    metrics = evaluate_teacher(snapshot)
    cli = load_json(os.path.join(snapshot, 'metrics.json'))
    mismatch = max(abs(metrics[f'teacher/{k}@35'] - cli[f'teacher/{k}@35']) for k in METRICS)
    snapshots[target] = {
        'command': segments_now[-1]['command'], 'workdir': snapshot, 'train_steps': steps,
        'target_train_time_s': target,
        'train_time_s': sum(s['train_time_s'] for s in segments_now),
        'wall_time_s': sum(s['wall_time_s'] for s in segments_now),
        'cpu_time_s': sum(s['cpu_time_s'] for s in segments_now),
        'segments': [{k: s[k] for k in ('steps', 'train_time_s', 'steps_per_s', 'overhead_s',
                                        'wall_time_s', 'cpu_time_s')} for s in segments_now],
        'heun35_max_abs_diff_vs_cli': mismatch, 'metrics': metrics}
  return snapshots


def evaluate_teacher(snapshot: str) -> dict:
  """Metrics of the exported teacher in `snapshot` with Euler (two grids) at STEPS and Heun at
  the teacher config's sample_steps, computed as the CLI's evaluation computes them."""
  import jax
  import ml_collections
  from onestep_jax.data import get_dataset
  from onestep_jax.diffusion import noise_levels, samplers
  from onestep_jax.experiment.evaluation import (evaluate, plan_evaluation, reference_pair,
                                                 sample_generators, save_sample_pictures)
  from onestep_jax.methods.base import Generator
  from onestep_jax.methods.teachers import load_teacher

  config = ml_collections.ConfigDict(load_json(os.path.join(snapshot, 'config.json')))
  dataset = get_dataset(config.data.name, **config.data.kwargs.to_dict())
  held_out, num = plan_evaluation(config.data, dataset, num_samples=config.eval.num_samples)
  teacher = load_teacher(os.path.join(snapshot, 'export'))
  m = config.method
  grid = lambda n: noise_levels.karras_sigmas(n, sigma_min=m.sigma_min, sigma_max=m.sigma_max,
                                              rho=m.rho)

  def generator(model, sampler, sigmas):
    def sample_fn(params, key, num, labels):
      x_T = m.sigma_max * jax.random.normal(key, (num,) + tuple(dataset.example_shape))
      return sampler(lambda x, s, l: teacher.denoise(params['teacher'], x, s, l), x_T,
                     sigmas=sigmas, labels=labels)
    return Generator(model, samplers.nfe(sampler, len(sigmas) - 1), sample_fn)

  generators = [generator('teacher', samplers.heun_sampler, grid(m.sample_steps))]
  for n in STEPS:
    generators.append(generator('teacher_euler', samplers.euler_sampler, grid(n)))
    nomin = grid(n + 1)
    generators.append(generator('teacher_euler_nomin', samplers.euler_sampler,
                                nomin.at[-2].set(0.0)[:-1]))
  samples = sample_generators(generators=tuple(generators), params={'teacher': teacher.params},
                              num_samples=num, batch_size=config.eval.batch_size,
                              seed=config.eval.seed, num_classes=0)
  reference = reference_pair(dataset if held_out is None else held_out, num,
                             seed=config.eval.seed)
  save_sample_pictures(samples, workdir=snapshot, reference=reference[0],
                       mixture=dataset.mixture)
  return evaluate(samples=samples, reference=reference, seed=config.eval.seed,
                  mixture=dataset.mixture)


def draw(workdirs: dict, path: pathlib.Path) -> None:
  """Rows: flow maps, then teacher snapshots; columns: 1/2/4 steps, then 8 steps or Heun 35."""
  rows = []
  for name, workdir in workdirs.items():
    teacher = name.startswith('teacher')
    columns = [(f'{n} step{"s" if n > 1 else ""}' + (' (Euler)' if teacher else ''),
                f'samples_{"teacher_euler" if teacher else "student"}_nfe{n}.png')
               for n in STEPS]
    columns.append(('Heun, 35 NFE', 'samples_teacher_nfe35.png') if teacher
                   else ('8 steps', 'samples_student_nfe8.png'))
    rows.append([(f'{name}\n{title}', os.path.join(workdir, png)) for title, png in columns])
  panel_grid(rows, path, width=2.6, height=2.7, dpi=60, fontsize=8)


def table(results: dict) -> list[str]:
  """One line per run and sampler: metrics at 1/2/4 steps (and Heun 35 for teachers)."""
  rows = []
  for name, r in results.items():
    m = r['metrics']
    models = (('teacher_euler', STEPS), ('teacher_euler_nomin', STEPS), ('teacher', (35,))) \
        if name.startswith('teacher') else (('student', STEPS),)
    for model, nfes in models:
      for n in nfes:
        rows.append(f'{name[:26]:26s} {model:19s} {n:2d} ' + ' '.join(
            f'{k}={m[f"{model}/{k}@{n}"]:.4g}' for k in METRICS))
    rows.append(f'{"":26s} train {r.get("train_time_s", m.get("train_time_s")):.0f}s '
                f'wall {r["wall_time_s"]:.0f}s cpu {r["cpu_time_s"]:.0f}s')
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--methods', default='meanflow,meanflow:weight_p=0.0,shortcut')
  parser.add_argument('--data', default='ring8', help='a 2-D toy with a mixture (nll, modes)')
  parser.add_argument('--out', default=str(RESULTS), help='JSON folder (the picture goes to '
                      'docs/ for the default, else here too)')
  parser.add_argument('--workroot', required=True, help='keep the runs here (a rerun reuses '
                      'finished runs)')
  parser.set_defaults(config=CONFIG)
  args, overrides = parser.parse_known_args()
  name = f'flowmap_scratch_{args.data}'
  results, workdirs = {}, {}
  for method in args.methods.split(','):
    workdirs[method] = os.path.join(args.workroot, method.replace(':', '_'))
    results[method] = run_once(CONFIG, method, args.data, workdirs[method], overrides)
    print('\n'.join(table({method: results[method]})), flush=True)
  budgets = {m: r['metrics']['train_time_s'] for m, r in results.items()}
  snapshots = train_teacher(args.workroot, args.data, sorted(set(budgets.values())))
  runs = {m: load_json(os.path.join(w, 'config.json')) for m, w in workdirs.items()}
  for method, target in budgets.items():
    s = snapshots[target]
    teacher_config = load_json(os.path.join(s['workdir'], 'config.json'))
    for field in ('eval', 'data'):
      if runs[method][field] != teacher_config[field]:
        raise ValueError(f'{method} and the teacher differ in {field}: metrics not comparable')
    key = f'teacher@{method}'
    results[key] = {**s, 'matched_to': method}
    workdirs[key] = s['workdir']
    print('\n'.join(table({key: results[key]})), flush=True)
  save_results(args, overrides, name, results, workdirs, draw, steps=list(STEPS),
               matching=(f'teacher segments to each flow map train_time_s (at most {TOLERANCE:.0%}'
                         f' short), first segment {CALIBRATION_STEPS} steps for calibration'))


if __name__ == '__main__':
  main()
