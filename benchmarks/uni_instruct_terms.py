"""How large each part of Uni-Instruct's generator gradient is, noise level by noise level, in a
finished ring run.

  python benchmarks/uni_instruct_terms.py --workdir=<finished uni_instruct run on a mixture toy> \
      [--sigmas=0.01,0.03,0.1,0.3,1,3,10] [--out=benchmarks/results/uni_instruct_terms_<name>.json]

At each sigma, for generator samples x_g noised with one draw of noise, the gradient in x_g of the
run's own generator loss (onestep_jax.losses.uni_instruct, the run's settings and density ratio)
is split into its Diff-Instruct-type term (the loss with `di_term` minus without), its
sampling-path term (with `sampling_path` minus without) and the SIM-type rest, beside the GAN
term's. Reported: the mean per-example norm of each part and the norm of its batch mean.
"""
import argparse
import os

import jax
import jax.numpy as jnp

from onestep_jax.losses.f_distill import density_ratio
from onestep_jax.losses.gan import gan_generator_loss
from onestep_jax.losses.uni_instruct import uni_instruct_generator_loss
from ratio_accuracy import restore
from step_timing import write_json


def term_gradients(loss_kwargs: dict, x_g: jnp.ndarray) -> dict:
  """Per-example gradients [B, ...] in x_g of the parts of uni_instruct_generator_loss called with
  `loss_kwargs` (all its arguments but x_g, di_term and sampling_path): 'di', 'sampling_path' and
  'sim' (what is left), which sum to the whole loss's gradient."""
  def grad(di_term, sampling_path):
    return jax.grad(lambda x: jnp.sum(uni_instruct_generator_loss(
        x_g=x, di_term=di_term, sampling_path=sampling_path, **loss_kwargs)))(x_g)
  sim = grad(False, False)
  return {'di': grad(True, False) - sim, 'sampling_path': grad(False, True) - sim, 'sim': sim}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--sigmas', default='0.01,0.03,0.1,0.3,1,3,10')
  parser.add_argument('--num_samples', type=int, default=4000)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  config, _, ctx, params = restore(args.workdir)
  m = config.method
  if m.name != 'uni_instruct':
    raise ValueError(f'{args.workdir} is a {m.name!r} run; this script splits uni_instruct\'s loss')
  k_z, k_n = jax.random.split(jax.random.PRNGKey(1))
  x_g = ctx.generate(params['generator'], jax.random.normal(k_z, (args.num_samples,) + ctx.shape),
                     None)
  noise = jax.random.normal(k_n, x_g.shape)
  norm = lambda g: float(jnp.mean(jnp.linalg.norm(g.reshape(g.shape[0], -1), axis=1)))
  rows = []
  for s in [float(v) for v in args.sigmas.split(',')]:
    sigma = jnp.full((args.num_samples,), s)
    x_t = x_g + s * noise
    ratio = density_ratio(logits=ctx.logits(params, x_t, sigma, None), sigma=sigma,
                          ratio_range=m.ratio_range, num_bins=m.ratio_bins)
    kwargs = dict(sigma=sigma, noise=noise, teacher_denoiser=ctx.teacher_denoiser(params),
                  fake_denoiser=ctx.fake_denoiser(params), ratio=ratio, divergence=m.divergence,
                  normalize=m.normalize, projection_ratio_term=m.projection_ratio_term,
                  clip_di_weight=m.clip_di_weight, weight_bins=m.get('weight_bins', 0))
    parts = term_gradients(kwargs, x_g)
    parts['gan'] = m.gan_weight_generator * jax.grad(lambda x: jnp.sum(gan_generator_loss(
        fake_logits=ctx.logits(params, x + s * noise, sigma, None))))(x_g)
    row = {'sigma': s}
    for name, g in parts.items():
      row[name] = {'mean_norm': norm(g), 'norm_of_mean': float(jnp.linalg.norm(g.mean(0)))}
    rows.append(row)
    print(f'sigma {s:6.3g}: mean per-example norm ' +
          ', '.join(f'{k} {row[k]["mean_norm"]:.3g}' for k in parts) +
          '; norm of the mean ' + ', '.join(f'{k} {row[k]["norm_of_mean"]:.3g}' for k in parts))
  result = {'workdir': os.path.abspath(args.workdir), 'divergence': m.divergence,
            'settings': {k: m.get(k) for k in ('sampling_path', 'di_term', 'projection_ratio_term',
                                               'clip_di_weight', 'weight_bins', 'ratio_range')},
            'args': vars(args), 'rows': rows}
  write_json(args.out, result)


if __name__ == '__main__':
  main()
