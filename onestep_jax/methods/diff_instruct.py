"""Diff-Instruct: a one-step generator and an online fake score in alternating phases.

Luo et al. 2023 (arXiv 2305.18455), METHODS.md §2. The fake score D_psi learns the generator's
noisy marginals by EDM denoising score matching on stop-gradient samples; the generator follows
the Integral-KL gradient (D_psi - D_teacher) injected through its samples only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from onestep_jax.diffusion import noise_levels, samplers
from onestep_jax.losses.denoising import edm_denoising_loss
from onestep_jax.losses.diff_instruct import diff_instruct_generator_loss
from onestep_jax.methods.base import Generator, MethodSetup
from onestep_jax.methods.networks import (build_network, init_network, make_denoiser,
                                          one_hot_labels)
from onestep_jax.methods.teachers import load_teacher
from onestep_jax.train.spec import Group, Phase, Stage


def _adam(lr: float, cfg) -> optax.GradientTransformation:
  return optax.adam(lr, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps)


def build(config: ml_collections.ConfigDict, dataset) -> MethodSetup:
  """Groups 'generator' (EMA) and 'fake_score'; phases 'fake_score' and 'generator'."""
  m = config.method
  teacher = load_teacher(m.teacher, dataset)
  module = build_network(config.net.name, config.net.kwargs)
  num_classes = dataset.num_classes if config.data.conditional else 0
  shape = tuple(dataset.example_shape)

  def generate(params, z, labels):
    """G(z) = D_theta(sigma_init z, sigma_init): a denoiser at a fixed noise level (§0)."""
    d = make_denoiser(module, params, sigma_data=m.sigma_data)
    return d(m.sigma_init * z, jnp.full((z.shape[0],), m.sigma_init), labels)

  def draw(key, batch):
    """Latents, per-example sigma and noise for one batch."""
    k_z, k_sigma, k_noise = jax.random.split(key, 3)
    n = batch['x'].shape[0]
    z = jax.random.normal(k_z, (n,) + shape)
    sigma = noise_levels.sample_log_normal_sigma(k_sigma, n, p_mean=m.p_mean, p_std=m.p_std)
    return z, sigma, jax.random.normal(k_noise, (n,) + shape), one_hot_labels(batch, num_classes)

  def fake_score_loss(params, batch, key):
    z, sigma, noise, labels = draw(key, batch)
    x_g = jax.lax.stop_gradient(generate(params['generator'], z, labels))
    fake = make_denoiser(module, params['fake_score'], sigma_data=m.sigma_data)
    loss = jnp.mean(edm_denoising_loss(denoiser=fake, x0=x_g, sigma=sigma, noise=noise,
                                       labels=labels, sigma_data=m.sigma_data))
    return loss, {'loss': loss}

  def generator_loss(params, batch, key):
    z, sigma, noise, labels = draw(key, batch)
    x_g = generate(params['generator'], z, labels)
    fake = make_denoiser(module, params['fake_score'], sigma_data=m.sigma_data)
    real = lambda x, s, c: teacher.denoise(params.get('teacher'), x, s, c)
    loss = jnp.mean(diff_instruct_generator_loss(x_g=x_g, sigma=sigma, noise=noise,
                                                 teacher_denoiser=real, fake_denoiser=fake,
                                                 labels=labels))
    return loss, {'loss': loss, 'sample_std': jnp.std(x_g)}

  def init_params(key):
    k_g, k_f = jax.random.split(key)
    params = {}
    if teacher.params is not None:
      params['teacher'] = teacher.params
    if m.init_from_teacher:
      if teacher.params is None or teacher.network != config.net.name or (
          teacher.network_kwargs != config.net.kwargs.to_dict()):
        raise ValueError('method.init_from_teacher needs a network teacher with the same network '
                         'and settings as config.net')
      params['generator'] = params['fake_score'] = teacher.params
    else:
      init = lambda k: init_network(module, k, example_shape=shape, num_classes=num_classes)
      params['generator'], params['fake_score'] = init(k_g), init(k_f)
    return params

  def student_sample(params, key, num, labels):
    return generate(params['generator'], jax.random.normal(key, (num,) + shape), labels)

  teacher_sigmas = noise_levels.karras_sigmas(m.teacher_sample_steps)

  def teacher_sample(params, key, num, labels):
    d = lambda x, s, c=None: teacher.denoise(params.get('teacher'), x, s, c)
    x_T = 80.0 * jax.random.normal(key, (num,) + shape)
    return samplers.heun_sampler(d, x_T, sigmas=teacher_sigmas, labels=labels)

  groups = [
      Group('generator', trainable=True, optimizer=_adam(m.lr_generator, m),
            ema_halflife_nimg=m.ema_halflife_nimg, clip_norm=m.clip_norm),
      Group('fake_score', trainable=True, optimizer=_adam(m.lr_fake_score, m),
            clip_norm=m.clip_norm),
  ]
  if teacher.params is not None:
    groups.append(Group('teacher', trainable=False))
  stages = [Stage((('fake_score', m.fake_score_steps), ('generator', 1)))]
  if m.fake_score_warmup_steps:
    stages.insert(0, Stage((('fake_score', 1),), until_step=m.fake_score_warmup_steps))
  return MethodSetup(
      groups=tuple(groups),
      phases=(Phase('fake_score', fake_score_loss, ('fake_score',)),
              Phase('generator', generator_loss, ('generator',))),
      stages=tuple(stages),
      init_params=init_params,
      generators=(Generator('teacher', samplers.nfe('heun', m.teacher_sample_steps), teacher_sample),
                  Generator('student', 1, student_sample)),
      export_group='generator',
      export_kwargs={'network': config.net.name, 'network_kwargs': config.net.kwargs.to_dict(),
                     'objective': 'one_step_edm', 'sigma_data': m.sigma_data,
                     'sigma_init': m.sigma_init, 'num_classes': num_classes},
      teacher_identity=teacher.identity,
  )
