"""DiffRatio: a one-step generator trained by a density-ratio classifier, with no teacher score.

Chen, Zhang, He et al., arXiv 2502.08005 (v1-v3 "Towards Training One-Step Diffusion Models
Without Distillation", v4 "DiffRatio"). Two trainable groups:
  'generator'  G(z) = D_theta(sigma_init z, sigma_init), started from the teacher's weights
               (`method.init_from_teacher`; random initialisation is the paper's ablation);
  'ratio'      a time-conditioned classifier between noised real data (label 1) and noised
               generator samples (label 0): a DiscriminatorHead on the features of a network of
               the generator's architecture (started like the generator), so its logit estimates
               log p_sigma / q_sigma.
Phases: 'ratio' (logistic loss) and 'generator' (onestep_jax.losses.diffratio: the input
gradient of the logit, weighted by h(r) of `method.divergence`). The teacher is used only to
initialise the networks and to sample it for comparison. The generator side (noise levels, EMA,
sampling, export) is onestep_jax.methods.one_step's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from onestep_jax.losses.common import noised
from onestep_jax.losses.diffratio import diffratio_generator_loss
from onestep_jax.losses.divergences import get_divergence
from onestep_jax.losses.gan import gan_discriminator_loss
from onestep_jax.methods.base import MethodSetup
from onestep_jax.methods.one_step import Draw, OneStep
from onestep_jax.train.spec import Phase


def build(config: ml_collections.ConfigDict, dataset) -> MethodSetup:
  """Groups 'generator' (EMA) and 'ratio' (+ the frozen 'teacher' for a network teacher);
  phases 'ratio' and 'generator'."""
  m = config.method
  get_divergence(m.divergence)  # fail early on an unknown name
  ctx = OneStep(config, dataset)
  head = ctx.make_head(m.ratio_width)

  def logit_fn(params):
    ratio = params['ratio']
    return lambda x, sigma, labels=None: ctx.head_logits(head, ratio['backbone'], ratio['head'],
                                                         x, sigma, labels)

  def ratio_loss(params, batch, key):
    """Logistic loss of the classifier: noised data against noised stop-gradient samples."""
    k_draw, k_sigma, k_real, k_fake = jax.random.split(key, 4)
    d = ctx.draw(k_draw, batch)
    x_g = jax.lax.stop_gradient(ctx.generate(params['generator'], d.z, d.labels))
    sigma = ctx.sample_sigma(k_sigma, x_g.shape[0])
    x_real = batch['x'].astype(x_g.dtype)
    logits = logit_fn(params)
    real = logits(noised(x_real, sigma, jax.random.normal(k_real, x_g.shape)), sigma, d.labels)
    fake = logits(noised(x_g, sigma, jax.random.normal(k_fake, x_g.shape)), sigma, d.labels)
    loss = jnp.mean(gan_discriminator_loss(real_logits=real, fake_logits=fake))
    accuracy = 0.5 * (jnp.mean(real > 0) + jnp.mean(fake < 0))
    return loss, {'loss': loss, 'real_logit': jnp.mean(real), 'fake_logit': jnp.mean(fake),
                  'accuracy': accuracy}

  def ratio_term(_: OneStep, params, batch, d: Draw, x_g):
    del batch
    per_example = diffratio_generator_loss(
        x_g=x_g, sigma=d.sigma, noise=d.noise, logit_fn=logit_fn(params), labels=d.labels,
        divergence=m.divergence,
        ratio_range=ctx.ratio_range,
        ratio_bins=m.ratio_bins)
    return per_example, {'distribution': jnp.mean(per_example)}

  def init_params(key):
    k_g, k_b, k_h = jax.random.split(key, 3)
    backbone = ctx.init_student(k_b)
    return {**ctx.teacher_params(), 'generator': ctx.init_student(k_g),
            'ratio': {'backbone': backbone, 'head': ctx.init_head(head, backbone, k_h)}}

  return ctx.method_setup(
      groups=[ctx.generator_group(), ctx.trainable_group('ratio', m.lr_ratio),
              *ctx.frozen_groups()],
      phases=(Phase('ratio', ratio_loss, ('ratio',)),
              Phase('generator', ctx.generator_phase_loss([ratio_term]), ('generator',))),
      stages=ctx.alternation('ratio', m.ratio_steps, m.ratio_warmup_steps),
      init_params=init_params)


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """Takes a network teacher's settings (see onestep_jax.methods.teachers.resolve_config)."""
  from onestep_jax.methods.teachers import resolve_config as from_teacher
  return from_teacher(config, dataset)
