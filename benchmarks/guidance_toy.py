"""Guided teachers for flow maps on a class-conditional 2-D toy: autoguidance against CFG.

  python benchmarks/guidance_toy.py [--scale=3] [--distill_steps=2000] [--workroot=<dir>]

The setting of Align Your Flow's Fig. 12 (Sabour, Fidler & Kreis 2025, arXiv 2506.14603), on our
labelled ring: the 8-mode ring with alternate modes in class 0 and class 1 (`ring8`,
num_classes=2). Two conditional MLP teachers are trained with `configs/teacher_toy2d.py:ring8,cond`
(label dropout 0.1): the main one and a weak one (smaller and trained for fewer steps), the weak
model of autoguidance (Karras et al. 2024, arXiv 2406.02507). AYF-EMD students are then distilled
from three teachers: unguided, autoguided (v_weak + λ (v − v_weak)) and classifier-free guided
(v_uncond + λ (v − v_uncond)), with the same λ. Each guided teacher (35 NFE) and its student (1,
2 and 4 steps) is sampled per class; reported per class and averaged: the mass on the class's own
modes (precision), on the other class's modes, off every mode, the class's modes covered, the
within-mode spread relative to the true std, and SWD / MMD / NLL against the exact class
distribution.

Writes benchmarks/results/guidance_toy.json and docs/guidance_toy.png (rows: teacher and student
at each step count; columns: guidance), and prints a table. Runs resume: each teacher is a
workdir under --workroot.
"""
import argparse
import json
import os
import pathlib
import time

import jax
import numpy as np

from onestep_jax.data import get_dataset
from onestep_jax.eval import mixture_metrics
from onestep_jax.experiment.evaluation import low_dim_metrics
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config, run
from onestep_jax.methods import build_method
from onestep_jax.train.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_SAMPLES = 4000  # per class and model
STUDENT_STEPS = (1, 2, 4)
TRUE_STD = 0.05  # ring8's mode std


def train_teacher(workdir: str, *, steps: int, hidden: int, layers: int) -> str:
  """A conditional ring teacher (an export dir); noise_scale 1 as the flow-map students use."""
  c = load_config_file(f'{ROOT}/configs/teacher_toy2d.py:ring8,cond')
  c.net.kwargs.hidden_dim = hidden
  c.net.kwargs.num_layers = layers
  c.net.kwargs.noise_scale = 1.0
  c.train.num_steps = steps
  run(c, workdir, progress=False)
  return os.path.join(workdir, 'export')


def distill(guidance: str, args, teacher: str, weak: str):
  """(setup, final state, seconds) of AYF-EMD distilled from the guided teacher."""
  c = load_config_file(f'{ROOT}/configs/distill_toy2d.py:ayf_emd')
  c.data.kwargs.num_classes = 2
  c.data.conditional = True
  c.method.teacher = teacher
  c.method.guidance = guidance
  if guidance != 'none':
    c.method.guidance_scale = args.scale
  if guidance == 'autoguidance':
    c.method.weak_teacher = weak
  c.train.num_steps = args.distill_steps
  data = get_dataset(c.data.name, **c.data.kwargs.to_dict())
  c = resolve_config(c, data)
  setup = build_method(c, data)
  trainer = Trainer(groups=setup.groups, phases=setup.phases, stages=setup.stages,
                    batch_size=c.train.batch_size)
  k_init, k_train = jax.random.split(jax.random.PRNGKey(c.seed))
  get_batch = lambda step, pi, pc: data.get_batch(step, c.train.batch_size, seed=c.seed,
                                                  process_index=pi, process_count=pc)
  t0 = time.perf_counter()
  state = trainer.init_state(setup.init_params(k_init), key=k_train)
  state = trainer.train(state, get_batch=get_batch, num_steps=c.train.num_steps, progress=False,
                        log_every=c.train.num_steps)
  jax.block_until_ready(state.params)
  return setup, state, time.perf_counter() - t0, data


def class_samples(generator, params, label: int, num_classes: int, seed: int) -> np.ndarray:
  labels = jax.nn.one_hot(np.full(NUM_SAMPLES, label), num_classes)
  sample = jax.jit(generator.sample_fn, static_argnums=2)
  return np.asarray(sample(params, jax.random.PRNGKey(seed), NUM_SAMPLES, labels))


def within_mode_spread(x: np.ndarray, mixture) -> float:
  """Mean over the modes that got samples of (per-mode sample std) / the true std."""
  assigned = np.asarray(mixture_metrics.assign_modes(x, mixture))
  stds = [x[assigned == k].std(axis=0).mean() for k in range(mixture.num_components)
          if np.sum(assigned == k) > 10]
  return float(np.mean(stds) / TRUE_STD) if stds else float('nan')


def class_metrics(x: np.ndarray, label: int, data) -> dict:
  mine = np.flatnonzero(data.component_classes == label)
  mass = np.asarray(mixture_metrics.per_mode_mass(x, data.mixture))
  exact = data.class_mixture(label)
  reference = exact.sample_numpy(NUM_SAMPLES, np.random.default_rng(100 + label))
  out = low_dim_metrics(x, reference, key=jax.random.PRNGKey(label), mixture=exact)
  out['own_modes'] = float(mass[mine].sum())
  out['other_modes'] = float(mass.sum() - mass[mine].sum())
  out['off_mode'] = float(1 - mass.sum())
  out['spread'] = within_mode_spread(x, exact)
  return out


def evaluate(setup, state, data) -> tuple[dict, dict]:
  """{model@n: class-averaged metrics (and per class)}, {model@n: samples per class}."""
  params = state.sampling_params()
  results, samples = {}, {}
  for g in setup.generators:
    if g.model == 'student' and g.nfe not in STUDENT_STEPS:
      continue
    name = f'{g.model}@{g.nfe}'
    xs = [class_samples(g, params, c, data.num_classes, seed=7 + c) for c in range(data.num_classes)]
    per_class = [class_metrics(x, c, data) for c, x in enumerate(xs)]
    results[name] = {k: float(np.mean([m[k] for m in per_class])) for k in per_class[0]}
    results[name]['per_class'] = per_class
    samples[name] = xs
  return results, samples


KEYS = ('own_modes', 'other_modes', 'off_mode', 'mode_coverage', 'spread', 'swd', 'mmd', 'nll')


def draw(samples: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  columns = list(samples)
  rows = list(next(iter(samples.values())))
  fig, axes = plt.subplots(len(rows), len(columns), figsize=(3 * len(columns), 3 * len(rows)),
                           squeeze=False)
  colors = ('tab:blue', 'tab:orange')
  for j, guidance in enumerate(columns):
    for i, name in enumerate(rows):
      ax = axes[i, j]
      for c, x in enumerate(samples[guidance][name]):
        ax.scatter(x[:1500, 0], x[:1500, 1], s=1, alpha=0.4, color=colors[c])
      ax.set_xlim(-1.6, 1.6)
      ax.set_ylim(-1.6, 1.6)
      ax.set_aspect('equal')
      ax.set_xticks([])
      ax.set_yticks([])
      model, n = name.split('@')
      label = f'teacher, {n} NFE' if model == 'teacher' else f'{n}-step student'
      ax.set_title(f'{guidance}: {label}', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=60)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--scale', type=float, default=3.0, help='λ of both guidances')
  parser.add_argument('--teacher_steps', type=int, default=4000)
  parser.add_argument('--weak_steps', type=int, default=500)
  parser.add_argument('--weak_hidden', type=int, default=64)
  parser.add_argument('--distill_steps', type=int, default=2000)
  parser.add_argument('--guidances', default='none,autoguidance,classifier_free')
  parser.add_argument('--workroot', default='/tmp/guidance_toy')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results'))
  args = parser.parse_args()

  t0 = time.perf_counter()
  teacher = train_teacher(os.path.join(args.workroot, 'teacher'), steps=args.teacher_steps,
                          hidden=256, layers=3)
  weak = train_teacher(os.path.join(args.workroot, 'weak'), steps=args.weak_steps,
                       hidden=args.weak_hidden, layers=2)
  teachers_s = time.perf_counter() - t0
  results, samples = {}, {}
  for guidance in args.guidances.split(','):
    setup, state, seconds, data = distill(guidance, args, teacher, weak)
    results[guidance], samples[guidance] = evaluate(setup, state, data)
    results[guidance]['distill_wall_time_s'] = seconds
    for name, r in results[guidance].items():
      if isinstance(r, dict):
        print(f'{guidance:16s} {name:11s} ' + ' '.join(f'{k}={r[k]:.4g}' for k in KEYS),
              flush=True)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  command = 'python benchmarks/guidance_toy.py ' + ' '.join(
      f'--{k}={v}' for k, v in vars(args).items() if k not in ('out', 'workroot'))
  with open(out / 'guidance_toy.json', 'w') as f:
    json.dump({'command': command, 'date': time.strftime('%Y-%m-%d'),
               'cpu_count': os.cpu_count(), 'teachers_wall_time_s': teachers_s,
               'results': results}, f, indent=2, sort_keys=True)
  draw(samples, ROOT / 'docs' / 'guidance_toy.png')
  print(f'wrote {out / "guidance_toy.json"} and docs/guidance_toy.png')


if __name__ == '__main__':
  main()
