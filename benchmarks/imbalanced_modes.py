"""Mode recovery on an imbalanced two-mode mixture: does the f-divergence matter?

  python benchmarks/imbalanced_modes.py [--method=fdistill] \
      [--divergences=reverse_kl,forward_kl,jensen_shannon] [--seeds=0,1,2] [--steps=500] \
      [--separation=<s>]

f-distill (Xu, Nie & Vahdat 2025, arXiv 2502.15681, Sec. 5 and Fig. 8) claims that less
mode-seeking divergences (forward KL, Jensen-Shannon) recover a mode that the student misses
better than reverse KL. The test: the teacher is the exact mixture 0.9 N((-1, 0), 0.3^2 I) +
0.1 N((1, 0), 0.3^2 I) (`two_modes_imbalanced`), and the student starts on the major mode only.
To get there, stage 1 distils (Diff-Instruct) the same mixture with the minor weight set to 1e-6,
i.e. the major mode alone; stage 2 starts each divergence's run from stage 1's generator (EMA)
and fake score (a fresh discriminator, trained alone with the fake score for the warm-up steps)
and distils the 0.9 / 0.1 mixture. Reported per divergence and seed: the minor mode's share of
10,000 one-step samples (target 0.1), off-mode share, SWD, MMD and NLL against exact samples.
--separation moves the modes to (-s/2, 0) and (s/2, 0) (default: the toy's, 2).

Writes benchmarks/results/imbalanced_modes_<method>[_sep<s>].json (the suffix with --separation)
and prints a table.
"""
import argparse
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from onestep_jax.data import get_dataset
from onestep_jax.eval import mixture_metrics
from onestep_jax.experiment.defaults import one_step_method_fields
from onestep_jax.experiment.evaluation import low_dim_metrics
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config
from onestep_jax.methods import build_method
from onestep_jax.train.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAJOR_ONLY = 1e-6  # stage 1's minor weight: the major mode alone
# Stage 2 keeps f-distill's own recipe (DMD2's: five fake-score updates per generator update,
# DMD's normaliser; its Karras noise levels and batch-mean h), not the ring settings of
# configs/distill_toy2d.py.
OWN_RECIPE = {'fdistill': ('fake_score_steps', 'normalize', 'sigma_dist', 'weight_bins')}
NUM_SAMPLES = 10_000


def own_recipe(method: str) -> dict:
  """The fields of OWN_RECIPE[method] at the method's defaults (its image settings)."""
  defaults = ml_collections.ConfigDict()
  one_step_method_fields(defaults, method)
  return {name: defaults[name] for name in OWN_RECIPE.get(method, ())}


def make_config(method: str, minor_weight: float, args, **method_fields):
  c = load_config_file(f'{ROOT}/configs/distill_toy2d.py:{method},two_modes_imbalanced')
  c.data.kwargs.minor_weight = minor_weight
  if args.separation is not None:
    c.data.kwargs.separation = args.separation
  c.net.kwargs.hidden_dim = args.hidden
  c.train.batch_size = args.batch
  c.method.update(method_fields)
  data = get_dataset(c.data.name, **c.data.kwargs.to_dict())
  return resolve_config(c, data), data


def trainer_for(setup, config):
  return Trainer(groups=setup.groups, phases=setup.phases, stages=setup.stages,
                 batch_size=config.train.batch_size)


def train(trainer, state, data, config, num_steps):
  get_batch = lambda step, pi, pc: data.get_batch(step, config.train.batch_size, seed=config.seed,
                                                  process_index=pi, process_count=pc)
  state = trainer.train(state, get_batch=get_batch, num_steps=num_steps, progress=False,
                        log_every=num_steps)
  jax.block_until_ready(state.params)
  return state


def student_samples(setup, state, seed):
  student = next(g for g in setup.generators if g.model == 'student')
  params = state.sampling_params()
  return np.asarray(jax.jit(student.sample_fn, static_argnums=2)(
      params, jax.random.PRNGKey(1000 + seed), NUM_SAMPLES, None))


def measure(x, data, reference):
  mass = np.asarray(mixture_metrics.per_mode_mass(x, data.mixture))
  out = low_dim_metrics(x, reference, key=jax.random.PRNGKey(0), mixture=data.mixture)
  return {'major_mass': float(mass[0]), 'minor_mass': float(mass[1]), **out}


def write(args, **results) -> pathlib.Path:
  """benchmarks/results/imbalanced_modes_<method>[_sep<s>].json with the command and `results`."""
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  suffix = '' if args.separation is None else f'_sep{args.separation:g}'
  path = out / f'imbalanced_modes_{args.method}{suffix}.json'
  command = 'python benchmarks/imbalanced_modes.py ' + ' '.join(
      f'--{k}={v}' for k, v in vars(args).items() if k != 'out')
  with open(path, 'w') as f:
    json.dump({'command': command, 'date': time.strftime('%Y-%m-%d'),
               'cpu_count': os.cpu_count(), **results}, f, indent=2, sort_keys=True)
  return path


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--method', default='fdistill', help='fdistill or uni_instruct')
  parser.add_argument('--divergences', default='reverse_kl,forward_kl,jensen_shannon')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--pretrain_steps', type=int, default=800, help='stage 1 (major mode)')
  parser.add_argument('--warmup_steps', type=int, default=200,
                      help='stage 2: fake score and discriminator alone first')
  parser.add_argument('--steps', type=int, default=500, help='stage 2 steps after the warm-up')
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--hidden', type=int, default=128)
  parser.add_argument('--separation', type=float, help='distance between the modes (default: '
                      "two_modes_imbalanced's)")
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results'))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  divergences = args.divergences.split(',')

  # Stage 1: one-step students of the major mode alone (one per seed, shared by the divergences).
  resolved, data = make_config(args.method, 0.1, args)
  sigma_data = resolved.method.sigma_data  # both stages: the same preconditioning
  cfg1, major = make_config('diff_instruct', MAJOR_ONLY, args, sigma_data=sigma_data)
  setup1 = build_method(cfg1, major)
  trainer1 = trainer_for(setup1, cfg1)
  starts, stage1 = {}, {}
  reference = data.sample(NUM_SAMPLES, seed=12345)
  for seed in seeds:
    cfg1.seed = seed
    k_init, k_train = jax.random.split(jax.random.PRNGKey(seed))
    t0 = time.perf_counter()
    state = train(trainer1, trainer1.init_state(setup1.init_params(k_init), key=k_train), major,
                  cfg1, args.pretrain_steps)
    starts[seed] = {'generator': state.ema['generator'], 'fake_score': state.params['fake_score']}
    stage1[seed] = {'wall_time_s': time.perf_counter() - t0,
                    **measure(student_samples(setup1, state, seed), data, reference)}
    print(f'stage 1 seed {seed}: minor={stage1[seed]["minor_mass"]:.4f} '
          f'major={stage1[seed]["major_mass"]:.4f} wall={stage1[seed]["wall_time_s"]:.0f}s',
          flush=True)

  # Stage 2: each divergence from the same starts.
  results = {}
  for divergence in divergences:
    cfg, data = make_config(args.method, 0.1, args, divergence=divergence,
                            fake_score_warmup_steps=args.warmup_steps, sigma_data=sigma_data,
                            **own_recipe(args.method))
    setup = build_method(cfg, data)
    trainer = trainer_for(setup, cfg)
    results[divergence] = {}
    for seed in seeds:
      cfg.seed = seed
      k_init, k_train = jax.random.split(jax.random.PRNGKey(seed))
      # Copies: the trainer donates its state's buffers, and the start serves every divergence.
      params = {**setup.init_params(k_init), **jax.tree.map(jnp.copy, starts[seed])}
      t0 = time.perf_counter()
      state = train(trainer, trainer.init_state(params, key=k_train), data, cfg,
                    args.warmup_steps + args.steps)
      r = {'wall_time_s': time.perf_counter() - t0,
           **measure(student_samples(setup, state, seed), data, reference)}
      results[divergence][seed] = r
      print(f'{divergence:16s} seed {seed}: minor={r["minor_mass"]:.4f} off={r["off_mode"]:.3f} '
            f'swd={r["swd"]:.4f} mmd={r["mmd"]:.5f} nll={r["nll"]:.2f} '
            f'wall={r["wall_time_s"]:.0f}s', flush=True)
      write(args, stage1=stage1, runs=results)  # partial results survive an interruption

  exact = measure(data.sample(NUM_SAMPLES, seed=777), data, reference)
  keys = ('minor_mass', 'off_mode', 'swd', 'mmd', 'nll')
  summary = {d: {k: (float(np.mean([r[k] for r in rs.values()])),
                     float(np.std([r[k] for r in rs.values()]))) for k in keys}
             for d, rs in results.items()}
  print(f'\n{"":22s}' + ''.join(f'{k:>20s}' for k in keys))
  print(f'{"exact samples":22s}' + ''.join(f'{exact[k]:20.4f}' for k in keys))
  print(f'{"start (stage 1)":22s}' + ''.join(
      f'{np.mean([s[k] for s in stage1.values()]):20.4f}' for k in keys))
  for d, s in summary.items():
    print(f'{d:22s}' + ''.join(f'{s[k][0]:12.4f} ± {s[k][1]:.4f}' for k in keys))
  path = write(args, stage1=stage1, runs=results, exact_samples=exact, summary_mean_std=summary)
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
