"""How well a trained run's discriminator estimates the density ratio r = p_sigma / q_sigma, and
what the exact ratio makes of the divergence's weight h(r), on a mixture toy.

  python benchmarks/ratio_accuracy.py --workdir=<finished fdistill or uni_instruct ring run> \
      [--out=benchmarks/results/ratio_accuracy_<name>.json]

The teacher's noised density p_sigma is exact (a Gaussian mixture); the student's,
q_sigma(x) = E_z N(x; G(z), sigma^2 I), is a Monte-Carlo mean over --density_samples generator
samples. At each sigma the script compares log r with the discriminator's logit at noised
generator samples (f-distill, arXiv 2502.15681, Sec. 4.2: the optimal logit is log r), and
reports both on and off the modes (as the off-mode metric counts them), with the share of the
weight h(r) of the run's divergence that off-mode samples get under the exact and the estimated
ratio.
"""
import argparse
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from onestep_jax.data import get_dataset
from onestep_jax.data.gaussian_mixture import empirical_marginal
from onestep_jax.eval.mixture_metrics import assign_modes
from onestep_jax.experiment.defaults import one_step_method_fields
from onestep_jax.experiment.runner import FIELDS_ADDED, resolve_config
from onestep_jax.losses.divergences import get_divergence
from onestep_jax.losses.f_distill import density_ratio
from onestep_jax.methods import build_method
from onestep_jax.methods.one_step import OneStep
from onestep_jax.train.checkpoint import Checkpointer
from onestep_jax.train.mesh import make_mesh
from onestep_jax.train.trainer import Trainer
from step_timing import write_json


def restore(workdir: str):
  """(config, dataset, OneStep context, parameters) of the newest checkpoint of `workdir`."""
  if not os.path.exists(os.path.join(workdir, 'config.json')):
    raise SystemExit(f'{workdir} has no config.json: pass the workdir of a finished run')
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  dataset = get_dataset(config.data.name, **config.data.kwargs.to_dict())
  if dataset.mixture is None:
    raise ValueError(f'{workdir} was not trained on a mixture toy: its exact density is unknown')
  m = config.method
  defaults = ml_collections.ConfigDict()
  one_step_method_fields(defaults, m.name)
  for field in defaults:  # method fields added since the run was saved keep their defaults
    if field not in m:
      m[field] = defaults[field]
  if m.name not in ('fdistill', 'uni_instruct') or not m.gan_weight_discriminator:
    raise ValueError(f'{workdir} is a {m.name!r} run without a discriminator; this '
                     'script reads the density ratio of an fdistill or uni_instruct run')
  config = resolve_config(config, dataset)
  setup = build_method(config, dataset)
  trainer = Trainer(groups=setup.groups, phases=setup.phases, stages=setup.stages,
                    batch_size=config.train.batch_size, mesh=make_mesh(fsdp=1),
                    packed_update=config.train.get('packed_update',
                                                   FIELDS_ADDED['train.packed_update']))
  state = trainer.init_state(setup.init_params(jax.random.PRNGKey(0)), key=jax.random.PRNGKey(0))
  with Checkpointer(os.path.join(workdir, 'checkpoints'),
                    teacher_identity=setup.teacher_identity or '') as ckpt:
    state = trainer.restore(ckpt, state)
  return config, dataset, OneStep(config, dataset), {**state.frozen, **state.params}


def student_marginal(x, centres, sigma, chunk: int = 512):
  """log q_sigma(x) [N] of q_sigma = mean_j N(centres_j, sigma^2 I) and its denoiser [N, D], in
  chunks of x."""
  part = jax.jit(lambda xc: empirical_marginal(xc, jnp.full((len(xc),), sigma), centres))
  parts = [part(x[i:i + chunk]) for i in range(0, len(x), chunk)]
  return tuple(jnp.concatenate(p) for p in zip(*parts))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--sigmas', default='0.02,0.05,0.1,0.3,1,3')
  parser.add_argument('--num_samples', type=int, default=4000)
  parser.add_argument('--density_samples', type=int, default=40000)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  config, dataset, ctx, params = restore(args.workdir)
  m = config.method
  divergence = get_divergence(m.divergence)
  k_z, k_c, k_n = jax.random.split(jax.random.PRNGKey(0), 3)
  x_g = ctx.generate(params['generator'], jax.random.normal(k_z, (args.num_samples,) + ctx.shape),
                     None)
  centres = ctx.generate(params['generator'],
                         jax.random.normal(k_c, (args.density_samples,) + ctx.shape), None)
  off = np.asarray(assign_modes(x_g, dataset.mixture)) < 0
  rows = []
  for s in [float(v) for v in args.sigmas.split(',')]:
    sigma = jnp.full((args.num_samples,), s)
    x_t = x_g + s * jax.random.normal(k_n, x_g.shape)
    log_q, y_exact = student_marginal(x_t, centres, s)
    exact = np.asarray(dataset.mixture.log_prob(x_t, s) - log_q)
    # the fake score's denoiser against the exact one, and the squared score difference
    # ||u||^2 = ||D_fake - D_teacher||^2 it gives against the exact student's
    y_fake = ctx.fake_denoiser(params)(x_t, sigma, None)
    y_teacher = ctx.teacher_denoiser(params)(x_t, sigma, None)
    fake_err = np.asarray(jnp.sum((y_fake - y_exact)**2, -1))
    u2_net = np.asarray(jnp.sum((y_fake - y_teacher)**2, -1))
    u2_exact = np.asarray(jnp.sum((y_exact - y_teacher)**2, -1))
    logit = np.asarray(ctx.logits(params, x_t, sigma, None))
    # the ratio the losses use: clipped to method.ratio_range and normalised per noise-level bin
    used = np.asarray(density_ratio(logits=jnp.asarray(logit), sigma=sigma,
                                    ratio_range=m.ratio_range, num_bins=m.ratio_bins))
    h_exact = np.asarray(divergence.h(jnp.exp(jnp.asarray(exact))))
    h_used = np.asarray(divergence.h(jnp.asarray(used)))
    row = {'sigma': s, 'corr': float(np.corrcoef(exact, logit)[0, 1]),
           'rmse': float(np.sqrt(np.mean((exact - logit)**2))),
           'exact_log_r_sd': float(exact.std()), 'logit_sd': float(logit.std())}
    for name, mask in (('all', np.ones_like(off)), ('on_mode', ~off), ('off_mode', off)):
      row[name] = {'exact_log_r': float(exact[mask].mean()), 'logit': float(logit[mask].mean()),
                   'h_exact_share': float(h_exact[mask].sum() / h_exact.sum()),
                   'h_used_share': float(h_used[mask].sum() / h_used.sum()),
                   'fake_denoiser_sq_error': float(fake_err[mask].mean()),
                   'u_sq_network': float(u2_net[mask].mean()),
                   'u_sq_exact': float(u2_exact[mask].mean())}
    rows.append(row)
    print(f"sigma {s:g}: corr {row['corr']:.2f}, rmse {row['rmse']:.2f}, sd of log r "
          f"{row['exact_log_r_sd']:.2f} (logit {row['logit_sd']:.2f}); off the modes "
          f"({off.mean():.0%} of samples) log r {row['off_mode']['exact_log_r']:+.2f} "
          f"(logit {row['off_mode']['logit']:+.2f}), share of h there: exact "
          f"{row['off_mode']['h_exact_share']:.1%}, used {row['off_mode']['h_used_share']:.1%}; "
          f"E||u||^2 network {row['all']['u_sq_network']:.3g}, exact {row['all']['u_sq_exact']:.3g}"
          f" (fake denoiser's squared error {row['all']['fake_denoiser_sq_error']:.3g})")
  result = {'workdir': os.path.abspath(args.workdir), 'method': m.name,
            'divergence': m.divergence, 'off_mode_fraction': float(off.mean()),
            'args': vars(args), 'rows': rows}
  write_json(args.out, result)


if __name__ == '__main__':
  main()
