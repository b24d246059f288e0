"""Teacher training: EDM denoising score matching (Karras et al. 2022, arXiv 2206.00364, Eq. 2)
or rectified-flow matching (Liu et al. 2022, arXiv 2209.03003)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from onestep_jax.diffusion import noise_levels, samplers
from onestep_jax.losses.denoising import edm_denoising_loss, flow_matching_loss
from onestep_jax.methods.base import Generator, MethodSetup
from onestep_jax.methods.denoisers import NetworkDenoiser
from onestep_jax.methods.networks import build_network, init_network, network_fn, one_hot_labels
from onestep_jax.methods.optimizer import adam
from onestep_jax.train.spec import Group, Phase, Stage

OBJECTIVES = ('edm', 'flow')


def build(config: ml_collections.ConfigDict, dataset) -> MethodSetup:
  """The 'teacher' method: one trainable group 'denoiser' (with EMA), one phase."""
  m = config.method
  if m.objective not in OBJECTIVES:
    raise ValueError(f'unknown teacher objective {m.objective!r}; valid: {list(OBJECTIVES)}')
  module = build_network(config.net.name, config.net.kwargs)
  num_classes = dataset.num_classes if config.data.conditional else 0
  shape = tuple(dataset.example_shape)

  net = NetworkDenoiser(module, objective=m.objective, sigma_data=m.sigma_data)

  def denoiser(params, *, train=False, rng=None):
    """The EDM denoiser D(x, sigma, labels) of the network (flow teachers are converted)."""
    return net.bind(params, train=train, rng=rng)

  def loss_fn(params, batch, key):
    k_time, k_noise, k_drop = jax.random.split(key, 3)
    x0 = batch['x']
    labels = one_hot_labels(batch, num_classes)
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    if m.objective == 'edm':
      sigma = noise_levels.sample_log_normal_sigma(k_time, x0.shape[0], p_mean=m.p_mean,
                                                   p_std=m.p_std)
      per_example = edm_denoising_loss(
          denoiser=denoiser(params['denoiser'], train=True, rng=k_drop), x0=x0, sigma=sigma,
          noise=noise, labels=labels, sigma_data=m.sigma_data)
    else:
      t = noise_levels.sample_logit_normal_time(k_time, x0.shape[0])
      velocity = network_fn(module, params['denoiser'], train=True, rng=k_drop)
      per_example = flow_matching_loss(velocity_fn=velocity, x0=x0, t=t, noise=noise,
                                       labels=labels)
    loss = jnp.mean(per_example)
    return loss, {'loss': loss}

  def init_params(key):
    return {'denoiser': init_network(module, key, example_shape=shape,
                                     num_classes=num_classes)}

  sigmas = noise_levels.karras_sigmas(m.sample_steps, sigma_min=m.sigma_min, sigma_max=m.sigma_max,
                                   rho=m.rho)

  def sample_fn(params, key, num, labels):
    x_T = m.sigma_max * jax.random.normal(key, (num,) + shape)
    return samplers.heun_sampler(denoiser(params['denoiser']), x_T, sigmas=sigmas, labels=labels)

  group = Group('denoiser', trainable=True, optimizer=adam(m.lr, m, m.lr_rampup_steps),
                ema_halflife_nimg=m.ema_halflife_nimg, ema_rampup_ratio=m.ema_rampup_ratio,
                clip_norm=m.clip_norm)
  return MethodSetup(
      groups=(group,),
      phases=(Phase('denoise', loss_fn, ('denoiser',)),),
      stages=(Stage((('denoise', 1),)),),
      init_params=init_params,
      generators=(Generator('teacher', samplers.nfe('heun', m.sample_steps), sample_fn),),
      export_group='denoiser',
      export_kwargs={'network': config.net.name, 'network_kwargs': config.net.kwargs.to_dict(),
                     'objective': m.objective, 'sigma_data': m.sigma_data,
                     'num_classes': num_classes},
  )

