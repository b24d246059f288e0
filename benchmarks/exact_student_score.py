"""One-step distillation on a mixture toy with the student's score and density ratio computed
exactly instead of learned: what a method's loss does when its networks make no errors.

  python benchmarks/exact_student_score.py --config=configs/distill_toy2d.py:uni_instruct \
      [--reference_size=4096] [--raw_ratio] [--name=<run>] \
      [--config.method.divergence=pearson_chi2 ...]

The generator, its optimiser, EMA, noise levels and evaluation are those of the config (a
distribution-matching method on a mixture toy, with the --config.x=y overrides); only the fake score
and the discriminator are replaced. At each generator update a fresh sample of
--reference_size stop-gradient generator outputs c_j defines the student's noised marginal
q_sigma(x) = mean_j N(x; c_j, sigma^2 I), whose denoiser E[c | x] stands in for the fake score
and, with the teacher's exact p_sigma, whose ratio p_sigma / q_sigma stands in for the
discriminator's (clipped and binned as the run's method.ratio_range and method.ratio_bins say;
--raw_ratio uses it as is). Both are exact for the empirical distribution of the c_j; their
only error is the Monte-Carlo error of the sample, which --reference_size controls. GAN terms are
dropped (there is no discriminator). The generator makes as many updates as in the run
(train.num_steps minus the fake score's warm-up). Writes benchmarks/results/exact_student_score.json
(runs keyed by --name, kept across calls) and docs/exact_student_score_<name>.png.
"""
import fcntl
import json
import pathlib
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from onestep_jax.data import get_dataset
from onestep_jax.data.gaussian_mixture import empirical_marginal
from onestep_jax.eval.plots import save_scatter
from onestep_jax.experiment.evaluation import (evaluate, plan_evaluation, reference_pair,
                                               sample_generators)
from onestep_jax.experiment.runner import resolve_config
from onestep_jax.losses.common import noised
from onestep_jax.losses.divergences import get_divergence
from onestep_jax.losses.f_distill import density_ratio
from onestep_jax.methods import build_method
from onestep_jax.methods.distribution_matching import LOSSES
from onestep_jax.methods.one_step import OneStep
from onestep_jax.train.ema import ema_beta, ema_update
from distill import ratios

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'exact_student_score.json'
flags.DEFINE_integer('reference_size', 4096, 'generator samples defining the student marginal',
                     lower_bound=1)
flags.DEFINE_bool('raw_ratio', False, 'use the exact ratio unclipped and unbinned')
flags.DEFINE_string('name', '', 'key of this run in the JSON (default: method and divergence)')
config_flags.DEFINE_config_file('config', str(ROOT / 'configs' / 'distill_toy2d.py'), 'run config')
FLAGS = flags.FLAGS


def train(config, dataset, *, reference_size: int, raw_ratio: bool):
  """The generator's EMA parameters after the run's generator updates with exact student scores."""
  m = config.method
  ctx = OneStep(config, dataset)
  loss_fn, fields = LOSSES[m.name]
  hyper = {k: m[f] for k, f in fields.items()}
  uses_ratio = 'divergence' in m and get_divergence(m.divergence).uses_ratio
  batch = config.train.batch_size
  optimizer = optax.adam(m.lr_generator, b1=m.beta1, b2=m.beta2, eps=m.eps)
  if m.clip_norm:
    optimizer = optax.chain(optax.clip_by_global_norm(m.clip_norm), optimizer)
  teacher = ctx.teacher_denoiser({})

  def loss(params, key):
    k_draw, k_ref = jax.random.split(key)
    d = ctx.draw(k_draw, {'x': jnp.zeros((batch,) + ctx.shape)})
    centres = jax.lax.stop_gradient(
        ctx.generate(params, jax.random.normal(k_ref, (reference_size,) + ctx.shape), None))
    x_g = ctx.generate(params, d.z, None)
    extra = {}
    if uses_ratio:
      x_t = noised(jax.lax.stop_gradient(x_g), d.sigma, d.noise)
      log_r = dataset.mixture.log_prob(x_t, d.sigma) - empirical_marginal(x_t, d.sigma, centres)[0]
      extra['ratio'] = jnp.exp(log_r) if raw_ratio else density_ratio(
          logits=log_r, sigma=d.sigma, ratio_range=ctx.ratio_range, num_bins=m.ratio_bins)
    per_example = loss_fn(
        x_g=x_g, sigma=d.sigma, noise=d.noise,
        teacher_denoiser=teacher,
        fake_denoiser=lambda x, sigma, labels=None: empirical_marginal(x, sigma, centres)[1],
        **hyper, **extra)
    return jnp.mean(per_example)

  @jax.jit
  def update(params, opt_state, ema, key, step):
    value, grads = jax.value_and_grad(loss)(params, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    beta = ema_beta(nimg=step * batch, batch_size=batch, halflife_nimg=m.ema_halflife_nimg,
                    rampup_ratio=m.ema_rampup_ratio)
    return params, opt_state, ema_update(ema, params, beta), value

  k_init, key = jax.random.split(jax.random.PRNGKey(config.seed))
  params = ctx.init_student(k_init)
  opt_state, ema = optimizer.init(params), params
  warmup = m.fake_score_warmup_steps
  for step in range(warmup, config.train.num_steps):  # the trainer's steps that update G
    params, opt_state, ema, value = update(params, opt_state, ema,
                                           jax.random.fold_in(key, step), step)
    if not np.isfinite(float(value)):
      raise FloatingPointError(f'the generator loss is {float(value)} at step {step}')
  return ema


def main(argv):
  del argv
  config = FLAGS.config
  if config.method.name not in LOSSES or config.method.get('regression_weight'):
    raise SystemExit(f'--config must be a distribution-matching method of {sorted(LOSSES)} '
                     f'without a regression term, got {config.method.name!r}')
  dataset = get_dataset(config.data.name, **config.data.kwargs.to_dict())
  if dataset.mixture is None:
    raise SystemExit(f'{config.data.name!r} is not a mixture toy: the teacher density is unknown')
  config = resolve_config(config, dataset)
  held_out, config.eval.num_samples = plan_evaluation(config.data, dataset,
                                                      num_samples=config.eval.num_samples)
  name = FLAGS.name or '_'.join(v for v in (config.method.name,
                                            config.method.get('divergence')) if v)
  t0, cpu0 = time.perf_counter(), time.process_time()
  ema = train(config, dataset, reference_size=FLAGS.reference_size, raw_ratio=FLAGS.raw_ratio)
  wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
  setup = build_method(config, dataset)
  samples = sample_generators(generators=setup.generators, params={'generator': ema},
                              num_samples=config.eval.num_samples,
                              batch_size=config.eval.batch_size, seed=config.eval.seed,
                              num_classes=0)
  reference = reference_pair(dataset if held_out is None else held_out, config.eval.num_samples,
                             seed=config.eval.seed)
  metrics = evaluate(samples=samples, reference=reference, seed=config.eval.seed,
                     mixture=dataset.mixture)
  save_scatter(samples['student_nfe1'][1], str(ROOT / 'docs' / f'exact_student_score_{name}.png'),
               reference=reference[0][:2000], means=dataset.mixture.means,
               title=f'{name}, exact student score, NFE 1')
  row = {'command': shlex.join(['python', 'benchmarks/exact_student_score.py', *sys.argv[1:]]),
         'train_wall_s': wall, 'train_cpu_s': cpu, 'metrics': metrics, **ratios(metrics),
         'measured': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
  with open(RESULTS, 'a+') as f:  # locked: runs in parallel share the JSON
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    results = json.loads(f.read() or '{}')
    results[name] = row
    f.seek(0)
    f.truncate()
    f.write(json.dumps(results, indent=2, sort_keys=True) + '\n')
  print(f"{name}: SWD {row['swd_vs_teacher']:.2f}x, MMD {row['mmd_vs_teacher']:.2f}x the "
        f"teacher's, NLL {metrics['student/nll@1']:.2f}, off-mode "
        f"{metrics['student/off_mode@1']:.3f}, modes {metrics['student/mode_coverage@1']:.0%}; "
        f'{cpu:.0f} s CPU training')


if __name__ == '__main__':
  app.run(main)
