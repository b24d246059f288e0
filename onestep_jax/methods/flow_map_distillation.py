"""Few-step distillation into a flow-map student F_theta(x_t, t, s) (onestep_jax.methods.flow_map):
  ayf_emd, ayf_lmd  Align Your Flow, Sabour et al., arXiv 2506.14603 (Eulerian / Lagrangian)
  scd               continuous-time consistency distillation in TrigFlow, arXiv 2410.11081
  rcm               sCD plus DMD's reverse-divergence term on one-step samples, with DMD's
                    fake score, arXiv 2510.08431 (the sum of the two existing losses)
  cd                discrete consistency distillation with an EMA target, arXiv 2303.01469
  pd                progressive distillation, rounds halving the steps, arXiv 2202.00512
The consistency methods use the student at s = 0 only and sample consistency-style (gamma = 1).
Every method can distil a guided teacher v_weak + lambda (v - v_weak): autoguidance with a weak
teacher or classifier-free guidance (`method.guidance`; onestep_jax.diffusion.guidance).

The trainer hands a loss only (params, batch, key). Three bookkeeping groups carry what these
methods need beyond that, each updated by plain SGD with learning rate 1 on a surrogate term
whose value is 0: 'clock' counts the updates (tangent warm-up, PD rounds), 'target' is CD's EMA
target theta^- <- mu theta^- + (1 - mu) theta, 'previous' is PD's frozen copy of the student at
the start of each round. All three are checkpointed with the rest, so a resumed run is exact.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from onestep_jax.diffusion import flow_maps, guidance, noise_levels, samplers
from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.losses import consistency, flow_map as flow_map_losses, progressive
from onestep_jax.losses.denoising import edm_denoising_loss
from onestep_jax.losses.dmd import dmd_generator_loss
from onestep_jax.methods.base import Generator, MethodSetup
from onestep_jax.methods.denoisers import NetworkDenoiser
from onestep_jax.methods.flow_map import FlowMapNet
from onestep_jax.methods.flow_map_config import GUIDANCE
from onestep_jax.methods.networks import build_network, init_network, one_hot_labels
from onestep_jax.methods.optimizer import adam
from onestep_jax.methods.teachers import load_teacher
from onestep_jax.nets.adaptive_weight import AdaptiveWeight
from onestep_jax.train.spec import Group, Phase, Stage

CLOCK, TARGET, PREVIOUS, WEIGHTING = 'clock', 'target', 'previous', 'weighting'
FAKE_SCORE, WEAK_TEACHER = 'fake_score', 'weak_teacher'
# AYF per-example weights w(t, s) of the map-space surrogate, whose gradient with respect to F is
# (s - t) g_hat: 'uniform' keeps it; 'inverse_gap' divides by t - s, so that every gap pulls F by
# g_hat (as MeanFlow's average-velocity loss does).
GAP_WEIGHTINGS = {
    'uniform': lambda t, s: jnp.ones_like(t),
    'inverse_gap': lambda t, s: 1.0 / jnp.maximum(t - s, 1e-4),
}


def tick(clock: jnp.ndarray) -> jnp.ndarray:
  """0, with gradient -1 with respect to `clock`: SGD with learning rate 1 adds one per update."""
  return jax.lax.stop_gradient(clock) - clock


def pull(moving: Any, anchor: Any, rate) -> jnp.ndarray:
  """0, with gradient rate (moving - anchor) with respect to `moving` (anchor is constant): SGD
  with learning rate 1 sets moving <- (1 - rate) moving + rate anchor (an EMA for rate = 1 - mu,
  a copy for rate = 1)."""
  terms = [jnp.sum(jax.lax.stop_gradient(rate * (m - a)) * (m - jax.lax.stop_gradient(m)))
           for m, a in zip(jax.tree.leaves(moving), jax.tree.leaves(jax.lax.stop_gradient(anchor)))]
  return sum(terms)


class FlowMapDistillation:
  """Teacher, student and the per-method losses of a flow-map distillation run."""

  def __init__(self, config: ml_collections.ConfigDict, dataset):
    m = config.method
    self.config, self.m = config, m
    self.teacher = self.load_teacher(dataset)  # None: no teacher (teacher-free training)
    self.weak_teacher = None
    if m.get('guidance', 'none') not in GUIDANCE:
      raise ValueError(f'unknown method.guidance {m.guidance!r}; valid: {list(GUIDANCE)}')
    if m.get('guidance') == 'autoguidance':
      if not m.weak_teacher:
        raise ValueError("method.guidance='autoguidance' needs method.weak_teacher (a teacher "
                         "spec like method.teacher)")
      self.weak_teacher = load_teacher(m.weak_teacher, dataset)
    self.num_classes = dataset.num_classes if config.data.conditional else 0
    self.shape = tuple(dataset.example_shape)
    self.student = FlowMapNet(self.student_network())
    self.t_max = float(flow_maps.time_from_edm_sigma(m.sigma_max))
    self.weighting = (AdaptiveWeight(hidden_dim=m.weighting_width)
                      if m.name in ('scd', 'rcm') and m.adaptive_weighting else None)

  def load_teacher(self, dataset):
    return load_teacher(self.m.teacher, dataset)

  def student_network(self) -> NetworkDenoiser:
    """Students are read the way the teacher was trained (resolve_config copied its settings)."""
    return self.teacher.net or NetworkDenoiser(
        build_network(self.config.net.name, self.config.net.kwargs), objective='edm',
        sigma_data=self.m.sigma_data)

  # Networks as callables ------------------------------------------------------------------

  def teacher_denoiser(self, params) -> Callable:
    """The teacher the losses and the teacher's samples use: guided when method.guidance is
    set, D_weak + lambda (D - D_weak) (velocities are affine in D at fixed (x_t, t), so this is
    v_weak + lambda (v - v_weak))."""
    main = lambda x, sigma, labels=None: self.teacher.denoise(params.get('teacher'), x, sigma,
                                                              labels)
    kind = self.m.get('guidance', 'none')
    if kind == 'autoguidance':
      weak = lambda x, sigma, labels=None: self.weak_teacher.denoise(params.get(WEAK_TEACHER), x,
                                                                     sigma, labels)
      return guidance.autoguidance(main, weak, scale=self.m.guidance_scale)
    if kind == 'classifier_free':
      return guidance.classifier_free_guidance(main, scale=self.m.guidance_scale,
                                               unconditional=self.m.unconditional_labels)
    return main

  def teacher_velocity(self, params) -> Callable:
    return flow_maps.teacher_velocity(self.teacher_denoiser(params))

  def consistency_fn(self, student_params) -> Callable:
    """The student as a consistency model: its flow map to s = 0."""
    f = self.student.flow_map(student_params)
    return lambda x, t, labels=None: f(x, t, jnp.zeros_like(t), labels)

  def warmup(self, params, r_max: float) -> jnp.ndarray:
    """Tangent warm-up factor min(step / warmup_steps, r_max) (a constant of the loss)."""
    if not self.m.warmup_steps:
      return jnp.asarray(r_max)
    return jax.lax.stop_gradient(jnp.minimum(params[CLOCK] / self.m.warmup_steps, r_max))

  def data(self, batch, key):
    """(x_0, standard normal noise, labels) of a batch."""
    x0 = batch['x'].astype(jnp.float32)
    return x0, jax.random.normal(key, x0.shape), one_hot_labels(batch, self.num_classes)

  # Losses: (params, batch, key) -> (per-example loss [B], metrics) --------------------------

  def ayf_loss(self, params, batch, key):
    m = self.m
    k_noise, k_time = jax.random.split(key)
    x0, noise, labels = self.data(batch, k_noise)
    t, s = flow_maps.sample_times(k_time, x0.shape[0], mean=m.time_mean, std=m.time_std)
    t, s = self.t_max * t, self.t_max * s
    x_t = noisy(x0, noise, t)
    r = self.warmup(params, m.r_max)
    loss_fn = {'ayf_emd': flow_map_losses.ayf_emd_loss,
               'ayf_emd_adv': flow_map_losses.ayf_emd_loss,  # flow_map_adversarial
               'ayf_lmd': flow_map_losses.ayf_lmd_loss}[m.name]
    per_example = loss_fn(average_velocity=self.student.bind(params['student']),
                          teacher_velocity=self.teacher_velocity(params), x_t=x_t, t=t, s=s,
                          labels=labels, r=r, c=m.tangent_c, tangent=m.tangent,
                          fd_step=m.fd_step)
    return GAP_WEIGHTINGS[m.gap_weighting](t, s) * per_example, {'r': r}

  def scd_loss(self, params, batch, key):
    m = self.m
    sd = self.student.net.sigma_data
    k_noise, k_time = jax.random.split(key)
    x0, noise, labels = self.data(batch, k_noise)
    t = noise_levels.sample_trigflow_time(k_time, x0.shape[0], p_mean=m.p_mean, p_std=m.p_std,
                                          sigma_data=sd)
    t = jnp.minimum(t, math.atan(m.sigma_max / sd))  # no further than the sampler starts
    x_t = expand_to(jnp.cos(t), x0) * x0 + expand_to(sd * jnp.sin(t), x0) * noise
    log_weight = (jnp.zeros_like(t) if self.weighting is None else
                  self.weighting.apply({'params': params[WEIGHTING]}, t))
    r = self.warmup(params, 1.0)
    per_example = consistency.scd_loss(
        trigflow_output=flow_maps.trigflow_output(self.consistency_fn(params['student']),
                                                  sigma_data=sd),
        teacher_velocity=flow_maps.trigflow_velocity(self.teacher_denoiser(params),
                                                     sigma_data=sd),
        x_t=x_t, t=t, sigma_data=sd, labels=labels, r=r, c=m.tangent_c, log_weight=log_weight,
        prior_weighting=m.prior_weighting, tangent=m.tangent, fd_step=m.fd_step)
    return per_example, {'r': r, 'log_weight': jnp.mean(log_weight)}

  def rcm_loss(self, params, batch, key):
    """sCD plus dmd_weight times DMD's generator loss on one-step samples of the student (rCM,
    arXiv 2510.08431, Sec. 4), plus the fake score's EDM denoising loss on those samples under
    stop-gradient (as DMD trains it, arXiv 2311.18828, Eq. 6). The three terms touch disjoint
    parameters: sCD and DMD the student, denoising the fake score (DMD reads it under
    stop-gradient), so one update trains both, as DMD's Algorithm 1 does."""
    m = self.m
    scd, metrics = self.scd_loss(params, batch, key)  # the same randomness as sCD
    k_z, k_sigma, k_noise, k_fake_sigma, k_fake_noise = jax.random.split(
        jax.random.fold_in(key, 1), 5)
    n = batch['x'].shape[0]
    labels = one_hot_labels(batch, self.num_classes)
    z = jax.random.normal(k_z, (n,) + self.shape)
    t_max = jnp.full((n,), self.t_max)
    x_g = self.consistency_fn(params['student'])(self.t_max * z, t_max, labels)
    fake = self.student.net.bind(params[FAKE_SCORE])
    dmd = dmd_generator_loss(
        x_g=x_g, sigma=noise_levels.sample_log_normal_sigma(k_sigma, n),
        noise=jax.random.normal(k_noise, x_g.shape),
        teacher_denoiser=self.teacher_denoiser(params), fake_denoiser=fake, labels=labels,
        normalize=m.dmd_normalize)
    denoising = edm_denoising_loss(
        denoiser=fake, x0=jax.lax.stop_gradient(x_g),
        sigma=noise_levels.sample_log_normal_sigma(k_fake_sigma, n),
        noise=jax.random.normal(k_fake_noise, x_g.shape), labels=labels,
        sigma_data=self.student.net.sigma_data)
    return scd + m.dmd_weight * dmd + denoising, {
        **metrics, 'scd': jnp.mean(scd), 'dmd': jnp.mean(dmd), 'denoising': jnp.mean(denoising)}

  def cd_loss(self, params, batch, key):
    m = self.m
    k_noise, k_index = jax.random.split(key)
    x0, noise, labels = self.data(batch, k_noise)
    grid = flow_maps.time_from_edm_sigma(
        noise_levels.karras_sigmas(m.num_levels, sigma_max=m.sigma_max)[:-1])
    n = jax.random.randint(k_index, (x0.shape[0],), 0, m.num_levels - 1)
    t, t_next = grid[n], grid[n + 1]
    x_t = noisy(x0, noise, t)
    x_next = flow_maps.heun_step(self.teacher_velocity(params), x_t, t, t_next, labels)
    per_example = consistency.consistency_distillation_loss(
        consistency_fn=self.consistency_fn(params['student']),
        target_fn=self.consistency_fn(params[TARGET]), x_t=x_t, t=t,
        x_next=jax.lax.stop_gradient(x_next), t_next=t_next, labels=labels,
        distance=m.distance, c=m.huber_c)
    return per_example, {}

  def pd_round(self, params):
    """(round index, student steps of the round, True at a round's first step)."""
    m = self.m
    rounds = int(math.log2(m.teacher_steps))
    clock = params[CLOCK].astype(jnp.int32)
    index = jnp.minimum(clock // m.round_steps, rounds - 1)
    starts = (clock % m.round_steps == 0) & (clock > 0) & (clock < rounds * m.round_steps)
    return index, (m.teacher_steps // 2) // (2**index), starts

  def pd_loss(self, params, batch, key):
    k_noise, k_index = jax.random.split(key)
    x0, noise, labels = self.data(batch, k_noise)
    index, steps, starts = self.pd_round(params)
    i = jax.random.randint(k_index, (x0.shape[0],), 1, steps + 1)
    t = self.t_max * i / steps
    s = self.t_max * (i - 1) / steps
    x_t = noisy(x0, noise, t)
    # At a round's first step 'previous' is only about to receive the student: use it directly.
    previous = jax.tree.map(lambda a, b: jnp.where(starts, a, b), params['student'],
                            params[PREVIOUS])
    ddim = lambda x, a, b, lb: flow_maps.euler_step(self.teacher_velocity(params), x, a, b, lb)
    student_step = self.student.flow_map(previous)

    def teacher_step(x, a, b, lb):
      return jax.lax.cond(index == 0, lambda: ddim(x, a, b, lb),
                          lambda: student_step(x, a, b, lb))

    per_example = progressive.progressive_distillation_loss(
        average_velocity=self.student.bind(params['student']), teacher_step=teacher_step,
        x_t=x_t, t=t, s=s, labels=labels)
    return per_example, {'round': index, 'student_steps': steps}

  # Setup -----------------------------------------------------------------------------------

  def bookkeeping(self, params):
    """The value-0 surrogate terms of the bookkeeping groups present in `params`."""
    total = tick(params[CLOCK]) if CLOCK in params else 0.0
    if TARGET in params:
      total = total + pull(params[TARGET], params['student'], 1.0 - self.m.target_decay)
    if PREVIOUS in params:
      total = total + pull(params[PREVIOUS], params['student'],
                           self.pd_round(params)[2].astype(jnp.float32))
    return total

  def phase_loss(self, loss_fn: Callable) -> Callable:
    def phase(params, batch, key):
      per_example, metrics = loss_fn(params, batch, key)
      loss = jnp.mean(per_example)
      return loss + self.bookkeeping(params), {'loss': loss, **metrics}
    return phase

  def frozen_params(self) -> dict[str, Any]:
    """The network teacher and weak teacher (frozen groups), if any."""
    frozen = {}
    if self.teacher is not None and self.teacher.params is not None:
      frozen['teacher'] = self.teacher.params
    if self.weak_teacher is not None and self.weak_teacher.params is not None:
      frozen[WEAK_TEACHER] = self.weak_teacher.params
    return frozen

  def init_params(self, key) -> dict[str, Any]:
    m = self.m
    k_student, k_weight = jax.random.split(key)
    params = self.frozen_params()
    from_teacher = m.get('init_from_teacher')
    if from_teacher and self.teacher.params is None:
      raise ValueError('method.init_from_teacher needs a network teacher; the analytic teacher '
                       'has no weights')
    params['student'] = self.student.init(
        k_student, example_shape=self.shape, num_classes=self.num_classes,
        teacher_params=self.teacher.params if from_teacher else None)
    for name in self.extra_groups():
      if name == CLOCK:
        params[CLOCK] = jnp.zeros((), jnp.float32)
      elif name == WEIGHTING:
        params[WEIGHTING] = jax.jit(self.weighting.init)(k_weight, jnp.ones((1,)))['params']
      elif name == FAKE_SCORE:  # DMD's fake score: the teacher's weights, else fresh
        params[FAKE_SCORE] = self.teacher.params if from_teacher else init_network(
            self.student.net.module, jax.random.fold_in(k_weight, 1), example_shape=self.shape,
            num_classes=self.num_classes)
      else:  # TARGET, PREVIOUS start as the student
        params[name] = params['student']
    return params

  def extra_groups(self) -> tuple[str, ...]:
    weighting = (WEIGHTING,) if self.weighting is not None else ()
    return {'ayf_emd': (CLOCK,), 'ayf_lmd': (CLOCK,), 'scd': (CLOCK, *weighting),
            'rcm': (CLOCK, *weighting, FAKE_SCORE), 'cd': (TARGET,),
            'pd': (CLOCK, PREVIOUS)}[self.m.name]

  def losses(self) -> dict[str, Callable]:
    """method name -> loss (params, batch, key) -> (per-example loss [B], metrics)."""
    return {'ayf_emd': self.ayf_loss, 'ayf_lmd': self.ayf_loss, 'scd': self.scd_loss,
            'rcm': self.rcm_loss, 'cd': self.cd_loss, 'pd': self.pd_loss}

  def setup(self) -> MethodSetup:
    m = self.m
    student_adam = adam(m.lr, m)
    groups = [Group('student', trainable=True, optimizer=student_adam,
                    ema_halflife_nimg=m.ema_halflife_nimg, ema_rampup_ratio=m.ema_rampup_ratio,
                    clip_norm=m.clip_norm)]
    for name in self.extra_groups():
      if name == WEIGHTING:
        groups.append(Group(name, trainable=True, optimizer=student_adam, clip_norm=m.clip_norm))
      elif name == FAKE_SCORE:
        groups.append(Group(name, trainable=True, clip_norm=m.clip_norm,
                            optimizer=adam(m.lr_fake_score, m)))
      else:
        groups.append(Group(name, trainable=True, optimizer=optax.sgd(1.0)))
    groups += [Group(name, trainable=False) for name in self.frozen_params()]
    loss_fn = self.losses()[m.name]
    updates = ('student',) + self.extra_groups()

    def teacher_sample(params, key, num, labels):
      sigmas = noise_levels.karras_sigmas(m.teacher_sample_steps, sigma_max=m.sigma_max)
      z = jax.random.normal(key, (num,) + self.shape)
      return samplers.heun_sampler(self.teacher_denoiser(params), sigmas[0] * z, sigmas=sigmas,
                                   labels=labels)

    def student_sampler(steps: int):
      def sample(params, key, num, labels):
        k_z, k_gamma = jax.random.split(key)
        z = jax.random.normal(k_z, (num,) + self.shape)
        return flow_maps.sample(self.student.bind(params['student']), self.t_max * z,
                                times=flow_maps.time_grid(steps, t_max=self.t_max),
                                labels=labels, gamma=m.gamma, key=k_gamma)
      return sample

    net = self.student.net
    export_kwargs = {'network': self.config.net.name,
                     'network_kwargs': self.config.net.kwargs.to_dict(),
                     'objective': 'flow_map', 'parameterization': net.objective,
                     'sigma_data': net.sigma_data, 't_max': self.t_max,
                     'num_classes': self.num_classes}
    if net.precond_kwargs:
      export_kwargs['precond_kwargs'] = dict(net.precond_kwargs)
    teacher = (() if self.teacher is None else
               (Generator('teacher', samplers.nfe('heun', m.teacher_sample_steps),
                          teacher_sample),))
    identity = None if self.teacher is None else self.teacher.identity
    if self.weak_teacher is not None:
      identity = f'{identity}; weak {self.weak_teacher.identity}'
    return MethodSetup(
        groups=tuple(groups),
        phases=(Phase('student', self.phase_loss(loss_fn), updates),),
        stages=(Stage((('student', 1),)),),
        init_params=self.init_params,
        generators=(*teacher, *(Generator('student', int(n), student_sampler(int(n)))
                                for n in m.sample_steps)),
        export_group='student',
        export_kwargs=export_kwargs,
        teacher_identity=identity,
    )


def noisy(x0, noise, t):
  """x_t = (1 - t) x_0 + t noise with per-example t [B]."""
  return expand_to(1.0 - t, x0) * x0 + expand_to(t, x0) * noise


def build(config: ml_collections.ConfigDict, dataset) -> MethodSetup:
  """Group 'student' (EMA) plus the method's bookkeeping groups; one phase 'student'."""
  return FlowMapDistillation(config, dataset).setup()


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """Takes a network teacher's settings (see onestep_jax.methods.teachers.resolve_config) and
  checks that the data fit an autoguidance weak teacher."""
  from onestep_jax.methods.teachers import check_data, resolve_config as from_teacher
  if config.method.get('guidance') == 'autoguidance' and config.method.weak_teacher:
    check_data(load_teacher(config.method.weak_teacher, dataset), dataset,
               conditional=config.data.conditional)
  return from_teacher(config, dataset)
