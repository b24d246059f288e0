"""Adversarial finetuning of an AYF-EMD flow map, `ayf_emd_adv` (Align Your Flow, Sabour et al.,
arXiv 2506.14603, Algorithm 2): a short phase that adds to AYF-EMD a relativistic
pairing GAN loss with R1/R2 penalties (R3GAN, arXiv 2501.05441) on the student's few-step samples
against real data.

The student loss is AYF-EMD (onestep_jax.methods.flow_map_distillation, same randomness) plus
gan_weight * softplus(D(real) - D(fake)), the fake samples being the student's `gan_steps`-step
samples from noise, differentiated through every step. The discriminator is the one of the
distribution-matching family (DMD2, arXiv 2405.14867): a DiscriminatorHead on the features (U-Net
bottleneck, MLP last hidden layer) of a copy of the teacher's network, both trained, reading real
and fake samples noised to a common level sigma per pair. AYF uses a StyleGAN2-style discriminator
on images instead [details unverified here]; we reuse our heads because the teacher's features fit
every data type of the library (2-D toys included) and start informed, as in DMD2 and LADD. Unlike
DMD2's, the backbone is trained by the GAN loss alone: there is no distribution-matching term, so
no fake score is needed.

The student starts from `method.student_init` (a flow-map run's workdir or export dir) or, without
it, as AYF-EMD does (from the teacher, else fresh), so the toy config also runs alone. A finetuned
student has finished its tangent warm-up: r is r_max from the first step.

Groups: 'student' (EMA), 'clock', 'discriminator' ({'backbone', 'head'}) and the frozen teachers;
phases 'discriminator' (discriminator_steps per step) then 'student'.
"""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import optax

from onestep_jax.diffusion import flow_maps, noise_levels
from onestep_jax.losses.common import noised
from onestep_jax.losses.gan import (gradient_penalty, relativistic_discriminator_loss,
                                    relativistic_generator_loss)
from onestep_jax.methods import flow_map_distillation
from onestep_jax.methods.base import MethodSetup
from onestep_jax.methods.flow_map_distillation import CLOCK, FlowMapDistillation
from onestep_jax.methods.networks import init_feature_head, init_network, one_hot_labels
from onestep_jax.nets.discriminator import DiscriminatorHead
from onestep_jax.train.spec import Group, Phase, Stage

DISCRIMINATOR = 'discriminator'


def student_export(path: str):
  """(params, network kwargs, metadata) of a flow-map student exported to `path` (a run's
  workdir or its export directory)."""
  from onestep_jax.export_format import export_directory, load_exported
  params, kwargs, meta = load_exported(export_directory(path) or path)
  if meta.get('objective') != 'flow_map':
    raise ValueError(f'method.student_init={path!r} is not a flow-map student export (objective '
                     f'{meta.get("objective")!r}); give the workdir of an ayf_emd run')
  return params, kwargs, meta


class AdversarialFlowMap(FlowMapDistillation):
  """AYF-EMD plus the relativistic GAN term, and the discriminator that reads it."""

  def __init__(self, config: ml_collections.ConfigDict, dataset):
    super().__init__(config, dataset)
    self.head = DiscriminatorHead(hidden_dim=self.m.discriminator_width,
                                  num_classes=self.num_classes)

  def extra_groups(self) -> tuple[str, ...]:
    return (CLOCK,)

  def losses(self):
    return {self.m.name: self.student_loss}

  def warmup(self, params, r_max: float) -> jnp.ndarray:
    if self.m.student_init:  # the finetuned student finished its warm-up
      return jnp.asarray(r_max)
    return super().warmup(params, r_max)

  # Discriminator ---------------------------------------------------------------------------

  def discriminator(self, disc_params, sigma, noise, labels):
    """D(x) -> logits [B]: the head on the backbone's features at x + sigma noise."""
    net = self.student.net

    def logits(x):
      feats = net.features(disc_params['backbone'], noised(x, sigma, noise), sigma, labels)
      return self.head.apply({'params': disc_params['head']}, feats, labels)

    return logits

  def pair(self, params, batch, key, x_fake):
    """(D_real, D_fake, x_real): discriminators of the real batch and of the fake samples, the
    i-th pair noised to the same level sigma_i with independent noises."""
    m = self.m
    k_sigma, k_real, k_fake = jax.random.split(key, 3)
    x_real = batch['x'].astype(x_fake.dtype)
    labels = one_hot_labels(batch, self.num_classes)
    sigma = noise_levels.sample_log_normal_sigma(k_sigma, x_real.shape[0], p_mean=m.gan_p_mean,
                                                 p_std=m.gan_p_std)
    d = lambda k: self.discriminator(params[DISCRIMINATOR], sigma,
                                     jax.random.normal(k, x_real.shape), labels)
    return d(k_real), d(k_fake), x_real

  def fake_samples(self, student_params, batch, key):
    """The student's `gan_steps`-step samples from noise, with the batch's labels; unrolled, since
    the student loss differentiates them (see flow_maps.sample)."""
    m = self.m
    k_z, k_gamma = jax.random.split(key)
    z = jax.random.normal(k_z, batch['x'].shape)
    return flow_maps.sample(self.student.bind(student_params), self.t_max * z,
                            times=flow_maps.time_grid(m.gan_steps, t_max=self.t_max),
                            labels=one_hot_labels(batch, self.num_classes), gamma=m.gamma,
                            key=k_gamma, unroll=True)

  def discriminator_loss(self, params, batch, key):
    """softplus(D(fake) - D(real)) + gan_gamma / 2 (R1 + R2), on stop-gradient fake samples."""
    k_fake, k_pair = jax.random.split(key)
    x_fake = jax.lax.stop_gradient(self.fake_samples(params['student'], batch, k_fake))
    d_real, d_fake, x_real = self.pair(params, batch, k_pair, x_fake)
    real_logits, fake_logits = d_real(x_real), d_fake(x_fake)
    adversarial = relativistic_discriminator_loss(real_logits=real_logits,
                                                  fake_logits=fake_logits)
    r1 = gradient_penalty(discriminator=d_real, x=x_real)
    r2 = gradient_penalty(discriminator=d_fake, x=x_fake)
    loss = jnp.mean(adversarial + 0.5 * self.m.gan_gamma * (r1 + r2))
    return loss, {'loss': loss, 'adversarial': jnp.mean(adversarial), 'r1': jnp.mean(r1),
                  'r2': jnp.mean(r2), 'real_logit': jnp.mean(real_logits),
                  'fake_logit': jnp.mean(fake_logits)}

  # Student ---------------------------------------------------------------------------------

  def student_loss(self, params, batch, key):
    """AYF-EMD (drawn from `key` exactly as ayf_emd does) + gan_weight softplus(D(real) -
    D(fake)); the GAN term reaches the student through the fake samples only."""
    emd, metrics = self.ayf_loss(params, batch, key)
    k_fake, k_pair = jax.random.split(jax.random.fold_in(key, 1))
    x_fake = self.fake_samples(params['student'], batch, k_fake)
    d_real, d_fake, x_real = self.pair(params, batch, k_pair, x_fake)
    gan = relativistic_generator_loss(real_logits=d_real(x_real), fake_logits=d_fake(x_fake))
    return emd + self.m.gan_weight * gan, {**metrics, 'emd': jnp.mean(emd),
                                           'gan': jnp.mean(gan)}

  # Setup -----------------------------------------------------------------------------------

  def init_params(self, key):
    m = self.m
    k_base, k_backbone, k_head = jax.random.split(key, 3)
    params = super().init_params(k_base)
    if m.student_init:
      loaded = student_export(m.student_init)[0]
      expected = jax.tree.map(lambda a: (a.shape, a.dtype), params['student'])
      got = jax.tree.map(lambda a: (a.shape, a.dtype), loaded)
      if expected != got:
        raise ValueError(f'method.student_init={m.student_init!r} holds parameters that do not '
                         'fit the student network of this config')
      params['student'] = jax.tree.map(jnp.asarray, loaded)
    if m.get('init_from_teacher'):
      backbone = self.teacher.params
    else:
      backbone = init_network(self.student.net.module, k_backbone, example_shape=self.shape,
                              num_classes=self.num_classes)
    head = init_feature_head(self.head, self.student.net, backbone, k_head,
                             example_shape=self.shape, num_classes=self.num_classes)
    params[DISCRIMINATOR] = {'backbone': backbone, 'head': head}
    return params

  def setup(self) -> MethodSetup:
    m = self.m
    base = super().setup()
    adam = optax.adam(m.lr_discriminator, b1=m.beta1_discriminator, b2=m.beta2, eps=m.eps)
    return dataclasses.replace(
        base,
        groups=base.groups + (Group(DISCRIMINATOR, trainable=True, optimizer=adam,
                                    clip_norm=m.clip_norm),),
        phases=(Phase(DISCRIMINATOR, self.discriminator_loss, (DISCRIMINATOR,)), *base.phases),
        stages=(Stage(((DISCRIMINATOR, m.discriminator_steps), ('student', 1))),))


def build(config: ml_collections.ConfigDict, dataset) -> MethodSetup:
  """Groups 'student' (EMA), 'clock', 'discriminator'; phases 'discriminator' and 'student'."""
  return AdversarialFlowMap(config, dataset).setup()


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """The teacher's settings (as ayf_emd); with `method.student_init`, an analytic teacher's run
  takes the exported student's network settings, and a network teacher's must equal them."""
  config = flow_map_distillation.resolve_config(config, dataset)
  if not config.method.student_init:
    return config
  _, kwargs, meta = student_export(config.method.student_init)
  same = lambda a, b: json.loads(json.dumps(a)) == json.loads(json.dumps(b))
  if 'teacher_objective' in config.method:  # a network teacher (its settings were copied)
    if meta['network'] != config.net.name or not same(kwargs, config.net.kwargs.to_dict()):
      raise ValueError(f'method.student_init={config.method.student_init!r} has network '
                       f'{meta["network"]} {kwargs}, the teacher {config.net.name} '
                       f'{config.net.kwargs.to_dict()}')
    return config
  config.net.name = meta['network']
  config.net.kwargs = ml_collections.ConfigDict(kwargs)
  config.method.sigma_data = meta['sigma_data']
  return config
