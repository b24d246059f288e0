"""What every one-step distribution-matching method shares (Diff-Instruct, DMD, DMD2, SiD, SIM).

- the generator G(z) = D_theta(sigma_init z, sigma_init): a denoiser read at one fixed noise
  level, started from the teacher's weights or at random (SiD, arXiv 2404.04057);
- an online fake score D_psi, trained by EDM denoising on stop-gradient generator samples
  (Diff-Instruct, arXiv 2305.18455);
- optionally a discriminator head on the fake score's features, trained on noised real vs
  generated samples with the fake score, and a GAN term for the generator (DMD2, arXiv
  2405.14867);
- the alternation stages (fake-score warm-up, then k fake-score updates per generator update,
  DMD2's two time-scale rule) and the generator's EMA with EDM's ramp-up.

A method supplies only its generator terms: functions (ctx, params, batch, draw, x_g) ->
(per-example loss [B], metrics) that are summed. Methods with another auxiliary network (DiffRatio's
density-ratio classifier) build their MethodSetup from the same pieces: `init_student`,
`make_head` / `init_head` / `head_logits`, `generator_group`, `alternation` and `method_setup`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from onestep_jax.diffusion import noise_levels, samplers
from onestep_jax.losses.common import noised
from onestep_jax.losses.denoising import edm_denoising_loss
from onestep_jax.losses.f_distill import check_ratio_range, density_ratio, ratio_within_range
from onestep_jax.losses.gan import gan_discriminator_loss, gan_generator_loss
from onestep_jax.methods.base import Generator, MethodSetup
from onestep_jax.methods.denoisers import NetworkDenoiser
from onestep_jax.methods.networks import (build_network, init_feature_head, init_network,
                                         one_hot_labels)
from onestep_jax.methods.optimizer import adam
from onestep_jax.methods.split_gradients import split_gradients
from onestep_jax.methods.teachers import load_teacher
from onestep_jax.train.spec import Group, Phase, Stage

SIGMA_DISTRIBUTIONS = ('log_normal', 'karras')
NUM_KARRAS_LEVELS = 1000  # grid of the 'karras' generator noise levels (DMD2, SiD)
LEAD_IN = 'generator_lead_in'  # the generator's phase before its own loss (see OneStep.setup)
# How a generator phase's samples also train the fake score (OneStep.generator_phase_loss)
REUSE = (None, 'hand_over', 'shared_noise')


@dataclasses.dataclass(frozen=True)
class Draw:
  """The random inputs of one generator update."""
  z: jnp.ndarray  # latents, shaped like the data
  sigma: jnp.ndarray  # [B] noise levels of the distribution-matching term
  noise: jnp.ndarray  # standard normal, shaped like the data
  labels: Optional[jnp.ndarray]  # one-hot [B, C] or None
  key: jax.Array  # for terms that need more randomness
  # D_fake(x_g + sigma noise) when the phase has computed it already (share_fake_score_noise),
  # differentiable in x_g only: the distribution term reads it instead of running the network.
  fake_x0: Optional[jnp.ndarray] = None


def precomputed_denoiser(value: jnp.ndarray) -> Callable:
  """A denoiser callable that returns `value`: D(x_t) of the one x_t it will be asked about,
  already computed by the phase (share_fake_score_noise)."""
  return lambda x, sigma, labels=None: value


# term(ctx, params, batch, draw, x_g) -> (per-example loss [B], dict of scalar metrics)
GeneratorTerm = Callable[['OneStep', Mapping[str, Any], Any, Draw, jnp.ndarray],
                         tuple[jnp.ndarray, Mapping[str, Any]]]


class OneStep:
  """The teacher, the student network and the shared phases of a one-step distillation run."""

  def __init__(self, config: ml_collections.ConfigDict, dataset):
    m = config.method
    if m.sigma_dist not in SIGMA_DISTRIBUTIONS:
      raise ValueError(f'unknown method.sigma_dist {m.sigma_dist!r}; valid: '
                       f'{list(SIGMA_DISTRIBUTIONS)}')
    # 'karras': the generator term's index range, checked here rather than at its first draw
    self.karras_index_range = (
        noise_levels.check_index_range(m.karras_index_range, NUM_KARRAS_LEVELS,
                                       name='method.karras_index_range')
        if m.sigma_dist == 'karras' else None)
    # f-distill, Uni-Instruct, DiffRatio: the density ratio's clipping range
    self.ratio_range = check_ratio_range(m.get('ratio_range'), name='method.ratio_range')
    self.config, self.m = config, m
    self.teacher = load_teacher(m.teacher, dataset)
    self.num_classes = dataset.num_classes if config.data.conditional else 0
    self.shape = tuple(dataset.example_shape)
    # Students are read the way the teacher was trained (resolve_config copied its settings).
    self.net = self.teacher.net or NetworkDenoiser(
        build_network(config.net.name, config.net.kwargs), objective='edm',
        sigma_data=m.sigma_data)
    self.use_gan = bool(m.get('gan_weight_generator') or m.get('gan_weight_discriminator'))
    self.head = self.make_head(m.discriminator_width) if self.use_gan else None

  # Networks as callables ------------------------------------------------------------------

  def generate(self, params_g, z, labels):
    """G(z) = D_theta(sigma_init z, sigma_init)."""
    s = self.m.sigma_init
    return self.net.denoise(params_g, s * z, jnp.full((z.shape[0],), s), labels)

  def teacher_denoiser(self, params) -> Callable:
    return lambda x, sigma, labels=None: self.teacher.denoise(params.get('teacher'), x, sigma,
                                                              labels)

  def fake_denoiser(self, params) -> Callable:
    return self.net.bind(params['fake_score'])

  def make_head(self, width: int):
    """A DiscriminatorHead of this run's classes over the network's features."""
    from onestep_jax.nets.discriminator import DiscriminatorHead
    return DiscriminatorHead(hidden_dim=width, num_classes=self.num_classes)

  def head_logits(self, head, backbone, head_params, x, sigma, labels):
    """Logits [B] of `head` on the features of the network with parameters `backbone` at noised
    samples x (noise level sigma [B])."""
    feats = self.net.features(backbone, x, sigma, labels)
    return head.apply({'params': head_params}, feats, labels)

  def logits(self, params, x, sigma, labels):
    """Discriminator logits [B] of noised samples x (noise level sigma [B]), read from the fake
    score's features (DMD2's head on the fake-score bottleneck)."""
    return self.head_logits(self.head, params['fake_score'], params['discriminator'], x, sigma,
                            labels)

  # Randomness ------------------------------------------------------------------------------

  def sample_sigma(self, key, n):
    """Noise levels of the generator's distribution-matching term."""
    m = self.m
    if m.sigma_dist == 'log_normal':
      return noise_levels.sample_log_normal_sigma(key, n, p_mean=m.p_mean, p_std=m.p_std)
    lo, hi = self.karras_index_range
    return noise_levels.sample_karras_index_sigma(key, n, num_levels=NUM_KARRAS_LEVELS,
                                                  min_index=lo, max_index=hi)

  def draw(self, key, batch) -> Draw:
    k_z, k_sigma, k_noise, k_rest = jax.random.split(key, 4)
    n = batch['x'].shape[0]
    return Draw(z=jax.random.normal(k_z, (n,) + self.shape), sigma=self.sample_sigma(k_sigma, n),
                noise=jax.random.normal(k_noise, (n,) + self.shape),
                labels=one_hot_labels(batch, self.num_classes), key=k_rest)

  # Phases ----------------------------------------------------------------------------------

  def fake_score_loss(self, params, batch, key):
    """EDM denoising on stop-gradient generator samples (+ the discriminator's GAN loss)."""
    k_draw, *keys = jax.random.split(key, 4)
    d = self.draw(k_draw, batch)
    x_g = jax.lax.stop_gradient(self.generate(params['generator'], d.z, d.labels))
    return self.fake_score_objective(params, batch, keys, x_g, d.labels)

  def fake_score_objective(self, params, batch, keys, x_g, labels, shared_draw=None):
    """The fake-score phase's loss and metrics on given generator samples x_g; `keys`: three
    keys (noise levels, noise, discriminator). `shared_draw=(sigma, noise, denoised)` gives the
    denoising loss's noise levels and noise, and the fake score's output at x_g + sigma noise
    (differentiable in its parameters), instead of drawing and evaluating them here."""
    m = self.m
    k_sigma, k_noise, k_real = keys
    n = x_g.shape[0]
    if shared_draw is None:
      sigma = noise_levels.sample_log_normal_sigma(k_sigma, n, p_mean=m.p_mean, p_std=m.p_std)
      noise, denoiser = jax.random.normal(k_noise, x_g.shape), self.fake_denoiser(params)
    else:
      sigma, noise, denoised = shared_draw
      denoiser = precomputed_denoiser(denoised)
    dsm = jnp.mean(edm_denoising_loss(denoiser=denoiser, x0=x_g, sigma=sigma, noise=noise,
                                      labels=labels, sigma_data=m.sigma_data))
    metrics = {'denoising': dsm}
    loss = dsm
    if self.use_gan:
      k_s, k_nf, k_nr = jax.random.split(k_real, 3)
      s = self.sample_sigma(k_s, n)
      x_real = batch['x'].astype(x_g.dtype)
      real_logits = self.logits(params, noised(x_real, s, jax.random.normal(k_nr, x_g.shape)), s,
                                labels)
      fake_logits = self.logits(params, noised(x_g, s, jax.random.normal(k_nf, x_g.shape)), s,
                                labels)
      disc = jnp.mean(gan_discriminator_loss(real_logits=real_logits, fake_logits=fake_logits))
      loss = loss + m.gan_weight_discriminator * disc
      metrics.update(discriminator=disc, real_logit=jnp.mean(real_logits),
                     fake_logit=jnp.mean(fake_logits))
    return loss, {'loss': loss, **metrics}

  def generator_phase_loss(self, terms: Sequence[GeneratorTerm], *, reuse=None):
    """The generator's loss: the sum of `terms` on one batch of generator samples.

    `reuse` has the fake score (and discriminator) also train on these samples, stop-gradient
    (DMD2's official loop reuses the generator turn's images for the fake-score turn): one
    generator forward pass fewer per iteration.
    - 'hand_over': the loss function also returns the samples and the fake-score update's keys,
      for a phase that takes them (`fake_score_on_handed`): each program holds only its own
      network's activations.
    - 'shared_noise': the fake score's loss joins this one, with the draw's noise levels and
      noise, so that one fake-score forward pass at x_t = x_g + sigma n serves both it (gradient
      into the fake score's parameters) and the terms (Draw.fake_x0, gradient into x_g through
      the input; see split_gradients): one more forward pass fewer. Valid for terms that read
      D_fake only at that x_t, as every distribution term does. The terms see the fake score and
      the discriminator through stop_gradient, so each group's gradient is that of its own loss.
    """
    if reuse not in REUSE:
      raise ValueError(f'unknown reuse {reuse!r}; valid: {list(REUSE)}')

    def loss_fn(params, batch, key):
      term_params = params
      if reuse is not None:
        key, *k_fake = jax.random.split(key, 4)
      if reuse == 'shared_noise':
        term_params = {n: jax.lax.stop_gradient(p) if n in ('fake_score', 'discriminator') else p
                       for n, p in params.items()}
      d = self.draw(key, batch)
      x_g = self.generate(params['generator'], d.z, d.labels)
      if reuse == 'shared_noise':
        for_fake_score, for_terms = split_gradients(
            self.net.denoise, params['fake_score'], noised(x_g, d.sigma, d.noise), d.sigma,
            d.labels)
        d = dataclasses.replace(d, fake_x0=for_terms)
      total = jnp.zeros((x_g.shape[0],), jnp.float32)
      metrics = {}
      for term in terms:
        per_example, term_metrics = term(self, term_params, batch, d, x_g)
        total = total + per_example
        metrics.update(term_metrics)
      loss = jnp.mean(total)
      metrics = {'loss': loss, 'sample_std': jnp.std(x_g), **metrics}
      if reuse is None:
        return loss, metrics
      if reuse == 'hand_over':
        return loss, metrics, {'x_g': x_g, 'keys': jnp.stack(k_fake)}
      fake_loss, fake_metrics = self.fake_score_objective(
          params, batch, k_fake, jax.lax.stop_gradient(x_g), d.labels,
          (d.sigma, d.noise, for_fake_score))
      metrics.update({f'fake_score/{k}': v for k, v in fake_metrics.items()})
      return loss + fake_loss, metrics
    return loss_fn

  def fake_score_on_handed(self, params, batch, key, handed):
    """The fake-score phase's loss on the samples and keys a generator phase handed over
    (generator_phase_loss with reuse='hand_over')."""
    del key
    return self.fake_score_objective(params, batch, list(handed['keys']), handed['x_g'],
                                     one_hot_labels(batch, self.num_classes))

  # Setup -----------------------------------------------------------------------------------

  def init_student(self, key):
    """Parameters of a network trained by the method: the teacher's with
    `method.init_from_teacher`, else a fresh initialisation."""
    if self.m.init_from_teacher:
      if self.teacher.params is None:
        raise ValueError('method.init_from_teacher needs a network teacher; the analytic teacher '
                         'has no weights')
      return self.teacher.params
    return init_network(self.net.module, key, example_shape=self.shape,
                        num_classes=self.num_classes)

  def init_head(self, head, backbone, key):
    """Fresh parameters of `head` over the features of the network `backbone`."""
    return init_feature_head(head, self.net, backbone, key, example_shape=self.shape,
                             num_classes=self.num_classes)

  def teacher_params(self) -> dict:
    """{'teacher': params} for a network teacher (a frozen group), else {}."""
    return {} if self.teacher.params is None else {'teacher': self.teacher.params}

  def init_params(self, key, extra_frozen: Optional[Callable] = None):
    k_g, k_f, k_d, k_x = jax.random.split(key, 4)
    params = {**self.teacher_params(), 'generator': self.init_student(k_g),
              'fake_score': self.init_student(k_f)}
    if self.use_gan:
      params['discriminator'] = self.init_head(self.head, params['fake_score'], k_d)
    if extra_frozen is not None:
      params.update(extra_frozen(self, params, k_x))
    return params

  def teacher_ode(self, params, z, labels, num_steps: int):
    """The teacher's deterministic Heun sample from x_T = sigma_max z (EDM's sampler, NFE
    2 num_steps - 1): the noise-image pairs of DMD's regression loss and the teacher's samples."""
    sigmas = noise_levels.karras_sigmas(num_steps)
    return samplers.heun_sampler(self.teacher_denoiser(params), sigmas[0] * z, sigmas=sigmas,
                                 labels=labels)

  def generator_group(self) -> Group:
    """The trainable generator, with its EMA and learning-rate ramp-up."""
    m = self.m
    return Group('generator', trainable=True,
                 optimizer=adam(m.lr_generator, m, m.lr_generator_rampup_steps),
                 ema_halflife_nimg=m.ema_halflife_nimg, ema_rampup_ratio=m.ema_rampup_ratio,
                 clip_norm=m.clip_norm)

  def trainable_group(self, name: str, lr: float) -> Group:
    """A trainable group without EMA, under the method's Adam settings."""
    return Group(name, trainable=True, optimizer=adam(lr, self.m), clip_norm=self.m.clip_norm)

  def frozen_groups(self, names: Sequence[str] = ()) -> list:
    """The frozen teacher (for a network teacher) and the frozen groups `names`."""
    teacher = [Group('teacher', trainable=False)] if self.teacher.params is not None else []
    return teacher + [Group(name, trainable=False) for name in names]

  @staticmethod
  def alternation(phase: str, steps: int, warmup_steps: int, generator: str = 'generator',
                  shared: bool = False, after: Optional[str] = None) -> tuple:
    """`warmup_steps` trainer steps of `phase` alone, then `steps` updates of it per update of
    phase `generator`. One of them can be made by that phase itself (`shared`) or by phase
    `after`, run after it; `phase` then runs `steps - 1` times (none if 0)."""
    stand_in = shared or after is not None
    repeats = steps - stand_in
    stages = [Stage(((phase, repeats),) * bool(repeats or not stand_in) + ((generator, 1),)
                    + ((after, 1),) * (after is not None))]
    if warmup_steps:
      stages.insert(0, Stage(((phase, 1),), until_step=warmup_steps))
    return tuple(stages)

  def setup(self, terms: Sequence[GeneratorTerm], *,
            lead_in: Optional[tuple[Sequence[GeneratorTerm], int]] = None,
            extra_frozen: Optional[Callable] = None,
            frozen_groups: Sequence[str] = ()) -> MethodSetup:
    """The MethodSetup of a method whose generator minimises the sum of `terms` (plus the GAN
    term when enabled). `lead_in=(terms, steps)` has the generator minimise those terms instead
    for `steps` trainer steps after the fake-score warm-up (phase 'generator_lead_in').
    `extra_frozen(ctx, params, key) -> {group: params}` adds frozen groups (e.g. DMD's regression
    pairs) named in `frozen_groups`.

    With `method.reuse_generator_samples` each generator phase hands its samples to a fake-score
    (and discriminator) update run after it, phase 'fake_score_from_<generator phase>', which
    stands in for one of the `fake_score_steps`; with `method.share_fake_score_noise` too, the
    generator phases make that update themselves, with the terms' noise and their D_fake pass
    (see generator_phase_loss)."""
    m = self.m
    gan = (gan_term,) if self.use_gan else ()
    terms = tuple(terms) + gan
    groups = [self.generator_group(), self.trainable_group('fake_score', m.lr_fake_score)]
    fake_updates = ('fake_score',)
    if self.use_gan:
      groups.append(self.trainable_group('discriminator', m.lr_fake_score))
      fake_updates += ('discriminator',)
    groups += self.frozen_groups(frozen_groups)
    if m.fake_score_steps < 1:
      raise ValueError(f'method.fake_score_steps must be >= 1, got {m.fake_score_steps}')
    reuse = bool(m.get('reuse_generator_samples'))
    share = bool(m.get('share_fake_score_noise'))
    if share and not reuse:
      raise ValueError('method.share_fake_score_noise needs method.reuse_generator_samples=True '
                       '(it shares the generator phase\'s fake-score update)')
    mode = 'shared_noise' if share else 'hand_over' if reuse else None
    phases = [Phase('fake_score', self.fake_score_loss, fake_updates)]
    takers = []  # after the others, so that each phase keeps its index (its random keys)

    def generator_phase(name, phase_terms) -> dict:
      """Adds the generator phase `name` (and the phase taking its samples); returns the
      keyword arguments of its `alternation`."""
      loss_fn = self.generator_phase_loss(phase_terms, reuse=mode)
      phases.append(Phase(name, loss_fn, ('generator',) + fake_updates * share,
                          gives=mode == 'hand_over'))
      if mode != 'hand_over':
        return {'generator': name, 'shared': share}
      after = f'fake_score_from_{name}'
      takers.append(Phase(after, self.fake_score_on_handed, fake_updates, takes=name))
      return {'generator': name, 'after': after}

    stages = list(self.alternation('fake_score', m.fake_score_steps, m.fake_score_warmup_steps,
                                   **generator_phase('generator', terms)))
    if lead_in is not None and lead_in[1]:
      lead_terms, lead_steps = lead_in
      lead_stage = self.alternation('fake_score', m.fake_score_steps, 0,
                                    **generator_phase(LEAD_IN, tuple(lead_terms) + gan))[0]
      stages.insert(-1, dataclasses.replace(lead_stage,
                                            until_step=m.fake_score_warmup_steps + lead_steps))
    phases += takers
    return self.method_setup(
        groups=groups, phases=phases, stages=stages,
        init_params=lambda key: self.init_params(key, extra_frozen))

  def method_setup(self, *, groups, phases, stages, init_params) -> MethodSetup:
    """A MethodSetup of these groups, phases and stages, sampling the one-step student and the
    teacher (Heun) and exporting the generator."""
    m = self.m

    def student_sample(params, key, num, labels):
      return self.generate(params['generator'], jax.random.normal(key, (num,) + self.shape),
                           labels)

    def teacher_sample(params, key, num, labels):
      return self.teacher_ode(params, jax.random.normal(key, (num,) + self.shape), labels,
                              m.teacher_sample_steps)

    export_kwargs = {'network': self.config.net.name,
                     'network_kwargs': self.config.net.kwargs.to_dict(),
                     'objective': 'one_step', 'parameterization': self.net.objective,
                     'sigma_data': self.net.sigma_data, 'sigma_init': m.sigma_init,
                     'num_classes': self.num_classes}
    if self.net.precond_kwargs:
      export_kwargs['precond_kwargs'] = dict(self.net.precond_kwargs)
    return MethodSetup(
        groups=tuple(groups),
        phases=tuple(phases),
        stages=tuple(stages),
        init_params=init_params,
        generators=(Generator('teacher', samplers.nfe('heun', m.teacher_sample_steps),
                              teacher_sample),
                    Generator('student', 1, student_sample)),
        export_group='generator',
        export_kwargs=export_kwargs,
        teacher_identity=self.teacher.identity,
    )


def gan_term(ctx: OneStep, params, batch, d: Draw, x_g):
  """Non-saturating GAN loss of noised generator samples, read by the discriminator head on the
  fake score's features (DMD2, arXiv 2405.14867); gradient through x_g only."""
  del batch
  per_example = gan_generator_loss(
      fake_logits=ctx.logits(params, noised(x_g, d.sigma, d.noise), d.sigma, d.labels))
  return ctx.m.gan_weight_generator * per_example, {'gan': jnp.mean(per_example)}


def distribution_term(loss_fn: Callable, *, ratio: Optional[Mapping[str, Any]] = None,
                      flat_outside_range: bool = False, **hyper) -> GeneratorTerm:
  """A generator term from a pure loss of (x_g, sigma, noise, teacher_denoiser, fake_denoiser,
  labels), e.g. `onestep_jax.losses.sid.sid_generator_loss` with its hyperparameters.

  With `ratio` (keyword arguments of onestep_jax.losses.f_distill.density_ratio) the loss also
  gets `ratio=`, the density ratio teacher / student read from the discriminator's logits at
  x_t = sg(x_g) + sigma n (f-distill, Uni-Instruct). When the draw carries `fake_x0` (see
  OneStep.generator_phase_loss), the loss's fake denoiser returns it instead of running the network.
  With `flat_outside_range` it also gets `ratio_in_range=` (onestep_jax.losses.f_distill.
  ratio_within_range: where the ratio is clipped, Uni-Instruct's h' and h'' are 0).
  """

  def term(ctx: OneStep, params, batch, d: Draw, x_g):
    del batch
    extra = {}
    if ratio is not None:
      x_t = noised(jax.lax.stop_gradient(x_g), d.sigma, d.noise)
      logits = ctx.logits(params, x_t, d.sigma, d.labels)
      extra['ratio'] = density_ratio(logits=logits, sigma=d.sigma, **ratio)
      if flat_outside_range:
        extra['ratio_in_range'] = ratio_within_range(logits=logits,
                                                     ratio_range=ratio['ratio_range'])
    fake_denoiser = ctx.fake_denoiser(params)
    if d.fake_x0 is not None:  # D_fake(x_t) of this draw, computed by the phase
      fake_denoiser = precomputed_denoiser(d.fake_x0)
    per_example = loss_fn(x_g=x_g, sigma=d.sigma, noise=d.noise,
                          teacher_denoiser=ctx.teacher_denoiser(params),
                          fake_denoiser=fake_denoiser, labels=d.labels, **hyper, **extra)
    metrics = {'distribution': jnp.mean(per_example)}
    if ratio is not None:
      metrics['ratio_std'] = jnp.std(extra['ratio'])
    return per_example, metrics

  return term
