"""Config fields of the few-step flow-map methods: distillation
(onestep_jax.methods.flow_map_distillation) and teacher-free training
(onestep_jax.methods.flow_map_training)."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

# method -> (gamma of the few-step sampler, extra fields as (name, value, comment)).
_TANGENT = (
    ('tangent', 'jvp', "'jvp' (one forward-mode pass) or 'finite_difference'"),
    ('fd_step', 1e-3, "step of the 'finite_difference' tangent"),
    ('tangent_c', 0.1, 'tangent normalisation g / (||g|| + c)'),
)
_AYF = _TANGENT + (
    ('time_mean', -0.8, '(t, s): two sorted times t_max sigmoid(N(time_mean, time_std^2))'),
    ('time_std', 1.0, 'std of the logit-normal times'),
    ('r_max', 0.99, 'regularised tangent warm-up: r ramps linearly to r_max (AYF Sec. 3.4)'),
    ('warmup_steps', 1000, 'steps of the r ramp'),
)
_SCD = _TANGENT + (
    ('p_mean', -1.0, 'TrigFlow times tan t = exp(tau) / sigma_data, tau ~ N(p_mean, p_std^2)'),
    ('p_std', 1.6, 'std of tau'),
    ('warmup_steps', 1000, 'tangent warm-up r = min(1, step / warmup_steps) (sCM: 10k)'),
    ('prior_weighting', True, 'weight 1 / (sigma_data tan t) before the adaptive weight'),
    ('adaptive_weighting', True, 'learned log-weight w_phi(t) (sCM); False: w = 0 (2-D toys)'),
    ('weighting_width', 128, 'hidden width of the adaptive weighting network'),
)
# w(t, s) of the AYF losses: 'uniform' (the map-space surrogate) or 'inverse_gap' (1 / (t - s)).
# On ring8 EMD needs 'inverse_gap' and LMD does better with 'uniform' (docs/RESULTS.md).
FLOW_MAP_METHODS = {
    'ayf_emd': (0.0, _AYF + (('gap_weighting', 'inverse_gap', 'per-example weight w(t, s)'),
                             ('lr', 3e-4, 'Adam learning rate of the student'))),
    'ayf_lmd': (0.0, _AYF + (('gap_weighting', 'uniform', 'per-example weight w(t, s)'),)),
    'scd': (1.0, _SCD),
    'rcm': (1.0, _SCD + (
        ('dmd_weight', 0.1, 'weight of the DMD term on one-step samples (0: exactly sCD) '
                            '[unverified: rCM\'s value]'),
        ('dmd_normalize', False, "DMD's normaliser mean|x_g - D_teacher| (off: 2-D toys)"),
        ('lr_fake_score', 1e-3, 'Adam learning rate of the fake score'))),
    'cd': (1.0, (
        ('num_levels', 18, 'Karras noise levels of the discrete consistency grid (CD uses 18)'),
        ('target_decay', 0.95, 'EMA decay mu of the target network (CD on ImageNet: 0.95)'),
        ('distance', 'l2', "'l2' or 'pseudo_huber'"),
        ('huber_c', None, 'pseudo-Huber constant (None: 0.00054 sqrt(data dimension))'))),
    'pd': (0.0, (
        ('teacher_steps', 64, 'teacher DDIM steps of the first round; each round halves them'),
        ('round_steps', 500, 'training steps per round (the last round continues to the end)'))),
}


# Adversarial finetuning (onestep_jax.methods.flow_map_adversarial): name -> (the flow-map method
# whose fields, loss and sampler it keeps, extra fields as (name, value, comment)).
ADVERSARIAL_FLOW_MAP_METHODS = {
    'ayf_emd_adv': ('ayf_emd', (
        ('gan_weight', 0.1, 'weight of the relativistic generator loss beside AYF-EMD (0: exactly '
                            'AYF-EMD) [not tuned; AYF\'s value unverified]'),
        ('gan_gamma', 1.0, 'gamma of the R1 + R2 penalties, weighted gamma / 2 (R3GAN)'),
        ('gan_steps', 1, 'student sampler steps of the fake samples the discriminator sees'),
        ('gan_p_mean', -1.2, 'noise levels of the discriminator inputs, ln sigma ~ N(mean, std^2)'),
        ('gan_p_std', 1.2, 'std of ln sigma'),
        ('lr_discriminator', 1e-4, 'Adam learning rate of the discriminator'),
        ('beta1_discriminator', 0.0, 'Adam beta1 of the discriminator (StyleGAN2, R3GAN: 0)'),
        ('discriminator_steps', 1, 'discriminator updates per student update'),
        ('discriminator_width', 256, 'hidden width of the discriminator head'))),
}
FLOW_MAP_VARIANTS = (*FLOW_MAP_METHODS, *ADVERSARIAL_FLOW_MAP_METHODS)  # config variant names


# Teacher-free flow maps (onestep_jax.methods.flow_map_training), trained from data alone.
TEACHER_FREE_METHODS = {
    'meanflow': (0.0, _TANGENT[:2] + (
        ('time_mean', -0.4, '(t, s): two sorted times t_max sigmoid(N(time_mean, time_std^2)) '
                            '(MeanFlow: -0.4, 1.0)'),
        ('time_std', 1.0, 'std of the logit-normal times'),
        ('gap_fraction', 0.25, 'fraction of examples with s < t; the others have s = t (flow '
                               'matching). MeanFlow: 25%'),
        ('weight_p', 1.0, 'adaptive weight 1 / (||Delta||^2 + c)^p (0: plain L2)'),
        ('weight_c', 1e-3, 'c of the adaptive weight'))),
    'shortcut': (0.0, (
        ('finest_steps', 128, 'M: the smallest shortcut step is t_max / M (a power of 2; '
                              'shortcut models: 128)'),
        ('self_consistency_fraction', 0.25, 'fraction of the batch trained by self-consistency '
                                            '(shortcut models: 1/4); the rest flow matching'))),
}
GUIDANCE = ('none', 'autoguidance', 'classifier_free')


def flow_map_method_fields(m: ml_collections.ConfigDict, name: str) -> None:
  """Fields of the flow-map distillation method `name`; unknown names list the valid ones."""
  if name not in FLOW_MAP_VARIANTS:
    raise ValueError(f'unknown flow-map method {name!r}; valid: {sorted(FLOW_MAP_VARIANTS)}')
  base, adversarial = ADVERSARIAL_FLOW_MAP_METHODS.get(name, (name, ()))
  m.teacher = 'analytic'  # 'analytic', 'bundled:<name>', 'edm:<file.npz>' or an export dir
  m.init_from_teacher = config_dict.placeholder(bool)  # start from the teacher (None: if a network)
  # Guided teacher v_weak + guidance_scale (v - v_weak) in every loss and in the teacher's samples:
  # 'autoguidance' (v_weak: weak_teacher, a smaller or less-trained model; arXiv 2406.02507) or
  # 'classifier_free' (v_weak: the teacher without labels; arXiv 2207.12598).
  m.guidance = 'none'  # 'none', 'autoguidance' or 'classifier_free'
  m.guidance_scale = 1.0  # lambda; 1 is the main teacher
  m.weak_teacher = config_dict.placeholder(str)  # autoguidance: a teacher spec like `teacher`
  m.unconditional_labels = 'zeros'  # classifier-free: 'zeros' (label dropout) or 'none'
  _student_fields(m, base, *FLOW_MAP_METHODS[base])
  if adversarial:
    m.name = name
    # A flow-map run's workdir or export dir to finetune; None: start as `base` does.
    m.student_init = config_dict.placeholder(str)
    for field, value, _ in adversarial:
      m[field] = value


def flow_map_training_fields(m: ml_collections.ConfigDict, name: str) -> None:
  """Fields of the teacher-free flow-map method `name`; unknown names list the valid ones."""
  if name not in TEACHER_FREE_METHODS:
    raise ValueError(f'unknown teacher-free flow-map method {name!r}; valid: '
                     f'{sorted(TEACHER_FREE_METHODS)}')
  # A teacher spec sampled beside the student for comparison (metrics teacher/<metric>@35);
  # never used in training. None: no reference.
  m.reference = config_dict.placeholder(str)
  _student_fields(m, name, *TEACHER_FREE_METHODS[name])


def _student_fields(m: ml_collections.ConfigDict, name: str, gamma: float, extra) -> None:
  m.name = name
  m.sigma_data = config_dict.placeholder(float)  # data std for preconditioning; None: measured
  m.sigma_max = 80.0  # sampling starts at flow time t_max = sigma_max / (1 + sigma_max)
  m.lr = 1e-3  # Adam learning rate of the student
  m.beta1 = 0.9  # Adam beta1
  m.beta2 = 0.99  # Adam beta2 (sCM: 0.99)
  m.eps = 1e-8  # Adam epsilon
  m.clip_norm = config_dict.placeholder(float)  # global gradient-norm clip (None: off)
  m.ema_halflife_nimg = 20_000.0  # EMA half-life of the student in samples (for sampling)
  m.ema_rampup_ratio = 0.05  # EMA half-life at most this fraction of the samples seen
  m.teacher_sample_steps = 18  # Heun steps of the teacher's samples (NFE 35)
  m.sample_steps = (1, 2, 4, 8)  # student evaluations: metrics student/<metric>@<steps>
  m.gamma = gamma  # few-step sampler: 0 deterministic, 1 re-noise as consistency models do
  for field, value, _ in extra:
    m[field] = config_dict.placeholder(float) if value is None else value
