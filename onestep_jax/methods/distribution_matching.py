"""One-step distribution-matching distillation: Diff-Instruct, DMD, DMD2, SiD, SIM, f-distill and
Uni-Instruct.

All seven share `onestep_jax.methods.one_step` (generator at sigma_init, online fake score, GAN
head, alternation, EMA); they differ only in the generator's loss, which is data below:
  diff_instruct  Luo et al. 2023, arXiv 2305.18455 (Integral KL)
  dmd            Yin et al. 2024, arXiv 2311.18828 (normalised KL gradient + regression on the
                 teacher's noise-image pairs)
  dmd2           Yin et al. 2024, arXiv 2405.14867 (DMD without regression, two time-scale
                 updates, GAN head on the fake score; the differences are config defaults)
  sid            Zhou et al. 2024, arXiv 2404.04057 (score identity, alpha)
  sim            Luo et al. 2024, arXiv 2410.16794 (score implicit matching, L2 / pseudo-Huber)
  fdistill       Xu et al. 2025, arXiv 2502.15681 (DMD2's gradient weighted by h(r) of an
                 f-divergence, r from the discriminator; method.divergence)
  uni_instruct   Wang et al. 2025, arXiv 2505.20755 (the expanded f-divergence: Diff-Instruct-
                 and SIM-type terms weighted by r; method.divergence)
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections

from onestep_jax import xla_cpu
from onestep_jax.losses.diff_instruct import diff_instruct_generator_loss
from onestep_jax.losses.divergences import get_divergence
from onestep_jax.losses.dmd import dmd_generator_loss, regression_loss
from onestep_jax.losses.f_distill import f_distill_generator_loss
from onestep_jax.losses.sid import sid_generator_loss
from onestep_jax.losses.sim import sim_generator_loss
from onestep_jax.losses.divergences import has_concave_h
from onestep_jax.losses.uni_instruct import uni_instruct_generator_loss
from onestep_jax.methods.base import MethodSetup
from onestep_jax.methods.networks import random_labels
from onestep_jax.methods.one_step import OneStep, distribution_term

# method name -> (generator loss, {loss keyword: config.method field})
LOSSES = {
    'diff_instruct': (diff_instruct_generator_loss, {}),
    'dmd': (dmd_generator_loss, {'normalize': 'normalize'}),
    'dmd2': (dmd_generator_loss, {'normalize': 'normalize'}),
    'sid': (sid_generator_loss, {'alpha': 'alpha', 'normalize': 'normalize'}),
    'sim': (sim_generator_loss, {'distance': 'distance', 'c': 'huber_c'}),
    'fdistill': (f_distill_generator_loss, {'divergence': 'divergence', 'normalize': 'normalize',
                                            'weight_bins': 'weight_bins'}),
    'uni_instruct': (uni_instruct_generator_loss, {'divergence': 'divergence',
                                                   'normalize': 'normalize',
                                                   'sampling_path': 'sampling_path',
                                                   'projection_ratio_term':
                                                       'projection_ratio_term',
                                                   'clip_di_weight': 'clip_di_weight',
                                                   'weight_bins': 'weight_bins',
                                                   'di_term': 'di_term'}),
}
PAIRS = 'regression_pairs'  # frozen group of DMD's (latent, teacher sample) pairs


def regression_pairs(ctx: OneStep, params, key) -> dict:
  """DMD's regression set: latents z and the teacher's ODE samples from sigma_max z (arXiv
  2311.18828), drawn once at start-up (deterministic in the seed, so not saved)."""
  m = ctx.m
  k_z, k_c = jax.random.split(key)
  z = jax.random.normal(k_z, (m.regression_pairs,) + ctx.shape)
  labels = random_labels(k_c, m.regression_pairs, ctx.num_classes)
  ode = xla_cpu.jit(lambda p, z, c: ctx.teacher_ode(p, z, c, m.teacher_sample_steps))
  x = ode(params, z, labels)
  pairs = {'z': z, 'x': x}
  if labels is not None:
    pairs['labels'] = labels
  return {PAIRS: pairs}


def regression_term(ctx: OneStep, params, batch, d, x_g):
  """lambda_reg * distance(G(z_i), teacher ODE sample of z_i) on a random subset of the pairs."""
  del batch, x_g
  pairs = params[PAIRS]
  idx = jax.random.randint(d.key, (d.z.shape[0],), 0, pairs['z'].shape[0])
  out = ctx.generate(params['generator'], pairs['z'][idx],
                     pairs['labels'][idx] if 'labels' in pairs else None)
  per_example = regression_loss(x_g=out, target=pairs['x'][idx], distance=ctx.m.regression_distance)
  return ctx.m.regression_weight * per_example, {'regression': jnp.mean(per_example)}


def ratio_settings(ctx: OneStep) -> Optional[dict]:
  """Arguments of onestep_jax.losses.f_distill.density_ratio for a method weighted by an
  f-divergence whose h is not constant; None when no density ratio is needed."""
  m = ctx.m
  if 'divergence' not in m or not get_divergence(m.divergence).uses_ratio:
    return None
  if not m.gan_weight_discriminator:
    raise ValueError(f'method.divergence={m.divergence!r} reads the density ratio from the '
                     'discriminator: set method.gan_weight_discriminator > 0 (or use '
                     "divergence='reverse_kl')")
  return {'ratio_range': ctx.ratio_range, 'num_bins': m.ratio_bins}


def build(config: ml_collections.ConfigDict, dataset) -> MethodSetup:
  """Groups 'generator' (EMA), 'fake_score' (and 'discriminator' with a GAN weight); phases
  'fake_score' and 'generator'."""
  m = config.method
  for field in ('reverse_kl_steps', 'weight_bins'):  # caught here, not when the phase first runs
    if m.get(field, 0) < 0:
      raise ValueError(f'method.{field} must be >= 0, got {m[field]}')
  loss_fn, fields = LOSSES[m.name]
  ctx = OneStep(config, dataset)
  ratio = ratio_settings(ctx)
  flat = m.get('flat_weight_outside_clip', False)
  if flat and (ratio is None or ratio['ratio_range'] is None):
    raise ValueError('method.flat_weight_outside_clip needs a clipped density ratio: set '
                     'method.ratio_range and a divergence whose h is not constant')
  hyper = {k: m[f] for k, f in fields.items()}
  terms = [distribution_term(loss_fn, ratio=ratio, flat_outside_range=flat, **hyper)]
  if m.get('regression_weight'):
    terms.append(regression_term)
    return ctx.setup(terms, extra_frozen=regression_pairs, frozen_groups=(PAIRS,))
  lead_in = None
  if m.get('reverse_kl_steps'):  # Uni-Instruct's official schedule: plain SIM, then D_f
    lead_in = ([distribution_term(loss_fn, **{**hyper, 'divergence': 'reverse_kl'})],
               m.reverse_kl_steps)
  return ctx.setup(terms, lead_in=lead_in)


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """Takes a network teacher's settings (see onestep_jax.methods.teachers.resolve_config)."""
  from onestep_jax.methods.teachers import resolve_config as from_teacher
  config = from_teacher(config, dataset)
  m = config.method
  if m.name == 'uni_instruct' and m.clip_di_weight is None:  # on for concave h (losses/uni_instruct)
    m.clip_di_weight = has_concave_h(m.divergence)
  return config
