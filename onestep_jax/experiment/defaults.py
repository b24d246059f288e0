"""Config sections shared by every experiment; configs/<name>.py fill in the rest."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  """Fields every run has. Methods and networks add their own sections."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # seeds initialisation, data order and training noise

  c.data = ml_collections.ConfigDict()
  c.data.name = 'ring8'  # a dataset of onestep_jax.data (see README)
  c.data.kwargs = ml_collections.ConfigDict()  # extra arguments of that dataset (e.g. path)
  c.data.conditional = False  # feed class labels to the networks (labelled datasets only)

  c.net = ml_collections.ConfigDict()
  c.net.name = 'mlp'  # 'mlp', 'song_unet' or 'dhariwal_unet'
  c.net.kwargs = ml_collections.ConfigDict()  # constructor arguments of that network

  c.method = ml_collections.ConfigDict()
  c.method.name = 'teacher'  # a method of onestep_jax.methods.METHODS

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256  # global batch size over all devices and processes
  c.train.num_steps = 5000  # total trainer steps (a resumed run continues up to this)
  c.train.log_every = 100  # steps between metric lines in metrics.jsonl
  c.train.save_every = 1000  # steps between checkpoints (and one at the end)
  c.train.keep_checkpoints = 2  # checkpoints kept on disk
  c.train.nonfinite = 'skip'  # 'skip' a NaN/Inf update and count it, or 'stop' the run
  c.train.fsdp = 1  # devices per 'fsdp' group sharding large parameters (1 = replicated)
  # One optimizer update for each group's small leaves packed together (every leaf on a CPU mesh
  # without an 'fsdp' axis: onestep_jax.train.packing; False for optax transforms that read the
  # tree, and to resume runs from before 4 Dec 2026).
  c.train.packed_update = True
  # XLA cache ($ONESTEP_JAX_CACHE_DIR or ~/.cache/onestep_jax/xla) and <workdir>/executables
  c.train.compilation_cache = True
  # Compile a stage's phases at once in threads: on 2 cores the first distillation iteration
  # 2-19% shorter, peak memory 3-18% higher (onestep_jax.train.trainer).
  c.train.parallel_compile = False
  # One CPU device under tcmalloc: wait after each phase with large XLA temporaries until they are
  # freed, so that the next phase reuses their pages (onestep_jax.train.trainer; the Diff-Instruct
  # reference iteration's resident memory 1,174 -> 964 MB).
  c.train.one_set_of_temporaries = True

  c.eval = ml_collections.ConfigDict()
  # Samples per model for metrics (and for the data floors). Between two samples of one 2-D
  # mixture, MMD^2 spreads by 0.0010 at 2,000 and 0.00016 at 20,000 (benchmarks/metric_noise.py).
  c.eval.num_samples = 20_000
  c.eval.batch_size = 1000  # samples generated per call
  c.eval.seed = 1234  # seeds evaluation sampling
  # Steps between evaluations during training (0: only the final one): the trained models'
  # metrics go to metrics.jsonl as eval/<model>/<metric>@<nfe> and are drawn in eval_curves.png.
  c.eval.every_steps = 0
  c.eval.feature_extractor = ''  # image data: '' trains the library's classifier features
  # A pytorch-fid Inception-v3 weights file (.npz/.pth) instead: paper-comparable FID/IS below.
  c.eval.inception = ml_collections.ConfigDict()  # used when feature_extractor is set
  c.eval.inception.num_samples = 50_000  # samples per model (the papers' 50,000)
  c.eval.inception.batch_size = 512  # global samples per batch (a multiple of the devices)
  c.eval.inception.reference = ''  # mu/sigma .npz (EDM layout); '' = from the training data
  c.eval.inception.pr_num_samples = 10_000  # samples (and references) for precision/recall
  c.eval.inception.save_every = 10  # batches between saves of partial sums (resume points)
  return c


def edm_method_fields(m: ml_collections.ConfigDict) -> None:
  """EDM noise distribution and preconditioning shared by teachers and distillation."""
  m.sigma_data = config_dict.placeholder(float)  # data std for preconditioning; None: measured
  m.p_mean = -1.2  # mean of log sigma during training (EDM log-normal)
  m.p_std = 1.2  # std of log sigma during training
  m.beta1 = 0.9  # Adam beta1
  m.beta2 = 0.999  # Adam beta2
  m.eps = 1e-8  # Adam epsilon
  m.clip_norm = config_dict.placeholder(float)  # global gradient-norm clip per group (None: off)


def teacher_method_fields(m: ml_collections.ConfigDict) -> None:
  """The 'teacher' method: optimiser, EMA and the Heun sampler used to evaluate it."""
  m.name = 'teacher'
  m.objective = 'edm'  # 'edm' denoising score matching or 'flow' matching
  edm_method_fields(m)
  m.lr = 1e-3  # Adam learning rate
  m.lr_rampup_steps = 500  # linear learning-rate warm-up
  m.ema_halflife_nimg = 100_000.0  # EMA half-life in training samples
  m.ema_rampup_ratio = 0.05  # EMA half-life at most this fraction of the samples seen
  m.sample_steps = 18  # Heun steps for evaluation (NFE = 2 * steps - 1)
  m.sigma_min = 0.002  # smallest sampling noise level
  m.sigma_max = 80.0  # largest sampling noise level
  m.rho = 7.0  # EDM time-discretisation exponent


# Bundled image sets: (channel_mult, attention resolutions, batch size, steps).
IMAGE_TEACHERS = {
    'digits': ((1, 2), (4,), 128, 4000),
    'fashion_mnist': ((1, 2, 2), (7,), 64, 3000),
}


def image_teacher_config(name: str, variant: str) -> ml_collections.ConfigDict:
  """EDM teacher (SongUNet, DDPM++ settings) on a bundled image set; variant '' or 'cond'."""
  if variant not in ('', 'cond'):
    raise ValueError(f'unknown variant {variant!r}; valid: "" (unconditional) or "cond"')
  channel_mult, attn, batch_size, steps = IMAGE_TEACHERS[name]
  c = base_config()
  c.data.name = name
  c.data.conditional = variant == 'cond'

  c.net.name = 'song_unet'
  k = c.net.kwargs
  k.img_resolution = 8 if name == 'digits' else 28  # image side
  k.in_channels = 1
  k.out_channels = 1
  k.label_dim = 10 if c.data.conditional else 0  # one-hot classes
  k.model_channels = 32  # base width (EDM CIFAR-10 uses 128)
  k.channel_mult = channel_mult  # width multipliers per resolution
  k.num_blocks = 1  # residual blocks per resolution (EDM CIFAR-10 uses 4)
  k.attn_resolutions = attn  # resolutions with self-attention
  k.dropout = 0.0  # dropout in residual blocks
  k.label_dropout = 0.1 if c.data.conditional else 0.0  # for classifier-free guidance

  m = c.method
  teacher_method_fields(m)
  m.sigma_data = 0.5  # EDM's value for images in [-1, 1]

  c.train.batch_size = batch_size
  c.train.num_steps = steps
  c.train.save_every = 500
  c.eval.num_samples = 179 if name == 'digits' else 1000  # per half of the held-out test split
  c.eval.batch_size = 250
  return c




def _divergence_fields(default: str) -> tuple:
  """The f-divergence fields of fdistill, uni_instruct and diffratio."""
  return (
      ('divergence', default, 'f of D_f(teacher || student): a row of '
       'onestep_jax.losses.divergences.DIVERGENCES (reverse_kl, forward_kl, jensen_shannon, ...)'),
      ('ratio_range', (0.1, 20.0), 'clip the density ratio exp(logit) to this range (f-distill)'),
      ('ratio_bins', 10, 'noise-level bins normalising the ratio by its batch mean (0: off)'))


# fdistill and uni_instruct: a reverse-KL lead-in (Uni-Instruct's official schedule trains with
# plain SIM before its divergence; methods/distribution_matching.py).
_LEAD_IN_FIELDS = (('reverse_kl_steps', 0, 'steps after the fake-score warm-up in which the '
                    'generator uses reverse KL (h = 1) before method.divergence'),)


# Per-method generator settings of the one-step family: (noise levels of the generator loss,
# Karras index range of 1000 levels, extra fields as (name, value, comment)).
ONE_STEP_METHODS = {
    'diff_instruct': ('log_normal', (0, 1000), ()),
    'dmd': ('karras', (20, 981), (
        ('normalize', True, 'divide the gradient by mean|x_g - D_teacher| (DMD Eq. 8)'),
        ('regression_weight', 0.25, 'weight of the regression loss on teacher ODE pairs'),
        ('regression_pairs', 2048, 'number of (latent, teacher sample) pairs drawn at start-up'),
        ('regression_distance', 'l2', "'l2' or 'pseudo_huber' (the paper uses LPIPS)"))),
    'dmd2': ('karras', (20, 981), (
        ('normalize', True, 'divide the gradient by mean|x_g - D_teacher| (DMD Eq. 8)'),)),
    'sid': ('karras', (0, 800), (
        ('alpha', 1.2, '0.5: Fisher-divergence gradient; 1.2: the paper default'),
        ('normalize', True, 'divide by mean|x_g - D_teacher| (SiD normaliser)'))),
    'sim': ('karras', (0, 800), (
        ('distance', 'pseudo_huber', "'l2' or 'pseudo_huber' on denoiser differences"),
        ('huber_c', None, 'pseudo-Huber constant c (None: 0.00054 sqrt(data dimension))'))),
    'fdistill': ('karras', (20, 981), _divergence_fields('jensen_shannon') + _LEAD_IN_FIELDS + (
        ('normalize', True, 'divide the gradient by mean|x_g - D_teacher| (DMD Eq. 8)'),
        ('weight_bins', 0, 'normalise h by its mean within this many noise-level bins instead '
         'of the batch mean (0: the paper\'s batch mean)'))),
    'uni_instruct': ('karras', (0, 800), _divergence_fields('forward_kl') + _LEAD_IN_FIELDS + (
        ('normalize', True, 'divide by mean|x_g - D_teacher| (SiD normaliser)'),
        ('sampling_path', True, 'keep the gradient of ||D_fake - D_teacher||^2 through the '
         'samples (exact; False: the official code)'),
        ('projection_ratio_term', True, "keep the ratio's part 2 r h'(r) b of the Diff-Instruct-"
         'type weight (exact; False: the official code; losses/uni_instruct.py)'),
        ('clip_di_weight', config_dict.placeholder(bool), 'clip the Diff-Instruct-type weight at 0 (None: for concave h, '
         'i.e. jensen_shannon and squared_hellinger; losses/uni_instruct.py)'),
        ('weight_bins', 0, 'divide h and its derivatives by the mean of h within this many '
         'noise-level bins (0: not normalised, as in the paper)'),
        ('di_term', True, 'keep the Diff-Instruct-type term (exact; False drops it: not exact; '
         'losses/uni_instruct.py)'),
        ('flat_weight_outside_clip', False, "h' = h'' = 0 where method.ratio_range clips the "
         'ratio (not exact; False: taken at the clipped ratio; losses/uni_instruct.py)'))),
    # DiffRatio: EDM's log-normal levels (on the ring, Karras levels up to sigma = 70 made the
    # sigma^2-weighted classifier gradient too noisy: MMD 99x the teacher's against 6x).
    'diffratio': ('log_normal', (0, 1000), _divergence_fields('reverse_kl') + (
        ('lr_ratio', 1e-3, 'density-ratio classifier learning rate'),
        ('ratio_steps', 1, 'classifier updates per generator update'),
        ('ratio_warmup_steps', 300, 'steps training only the classifier at the start'),
        ('ratio_width', 256, 'hidden width of the classifier head'))),
}


def method_and_divergence(variant: str) -> tuple:
  """(method, divergence or None) of a distillation config string's `<method>` or
  `<method>:<divergence>` (the second form for fdistill, uni_instruct and diffratio); an unknown
  method or divergence is refused with the valid names."""
  from onestep_jax.losses.divergences import get_divergence
  from onestep_jax.methods.flow_map_config import FLOW_MAP_VARIANTS
  method, colon, divergence = variant.partition(':')
  if method not in ONE_STEP_METHODS and method not in FLOW_MAP_VARIANTS:
    raise ValueError(f'unknown method {method!r}; valid: '
                     f'{sorted(ONE_STEP_METHODS) + sorted(FLOW_MAP_VARIANTS)}')
  if not colon:
    return method, None
  takes = [n for n, fields in ONE_STEP_METHODS.items()
           if any(field[0] == 'divergence' for field in fields[2])]
  if method not in takes:
    raise ValueError(f'{variant!r}: only {sorted(takes)} take a divergence after the colon')
  get_divergence(divergence)
  return method, divergence


def one_step_method_fields(m: ml_collections.ConfigDict, name: str) -> None:
  """Fields of a one-step distillation method (onestep_jax.methods.distribution_matching, or
  onestep_jax.methods.diffratio, which has a density-ratio classifier instead of a fake score)."""
  if name not in ONE_STEP_METHODS:
    raise ValueError(f'unknown variant {name!r}; valid: {sorted(ONE_STEP_METHODS)}')
  sigma_dist, index_range, extra = ONE_STEP_METHODS[name]
  m.name = name
  m.teacher = 'analytic'  # 'analytic', 'bundled:<name>', 'edm:<file.npz>' or an export dir
  m.init_from_teacher = config_dict.placeholder(bool)  # start from the teacher (None: if a network)
  edm_method_fields(m)  # p_mean / p_std: noise levels of the fake score's denoising loss
  m.beta1 = 0.0  # Adam beta1 = 0 as in Diff-Instruct / SiD
  m.sigma_init = 2.5  # generator G(z) = D(sigma_init z, sigma_init)
  m.lr_generator = 1e-4  # generator learning rate
  # Generator updates over which its learning rate rises linearly from 0 (EDM's ramp-up; 0: off)
  m.lr_generator_rampup_steps = 0
  m.ema_halflife_nimg = 20_000.0  # EMA half-life of the generator in samples
  m.ema_rampup_ratio = 0.05  # EMA half-life at most this fraction of the samples seen
  m.teacher_sample_steps = 18  # Heun steps for the teacher's samples and ODE pairs (NFE 35)
  m.sigma_dist = sigma_dist  # generator-loss noise levels: 'log_normal' or 'karras'
  m.karras_index_range = index_range  # 'karras': index range [lo, hi) of 1000 ascending levels
  if name != 'diffratio':
    m.lr_fake_score = 1e-3  # fake-score (and discriminator) learning rate
    m.fake_score_steps = 1  # fake-score updates per generator update (two time-scale rule)
    m.fake_score_warmup_steps = 300  # steps training only the fake score at the start
    # The generator update's samples also serve one fake-score update (DMD2's official loop):
    # one generator forward pass fewer per iteration; on for DMD2 (below), off for the methods
    # whose official loops draw twice.
    m.reuse_generator_samples = False
    # With it, that update also takes the distribution term's noise levels and noise, and one
    # fake-score forward pass serves both: one pass fewer.
    m.share_fake_score_noise = False
    m.gan_weight_generator = 0.0  # weight of the generator's GAN term (0: no discriminator)
    m.gan_weight_discriminator = 0.0  # weight of the discriminator loss in the fake-score phase
    m.discriminator_width = 256  # hidden width of the discriminator head
  for field, value, _ in extra:
    m[field] = config_dict.placeholder(float) if value is None else value
  if name == 'dmd2':  # DMD2's two time-scale rule and GAN head (arXiv 2405.14867, Sec. 4)
    m.reuse_generator_samples = True  # its official loop: the guidance turn reuses the images
    m.fake_score_steps = 5
    m.gan_weight_generator = 3e-3
    m.gan_weight_discriminator = 1e-2
  if name == 'fdistill':  # DMD2's recipe, whose discriminator also gives the ratio (Table 5)
    m.fake_score_steps = 5
    m.gan_weight_generator = 1e-3
    m.gan_weight_discriminator = 1e-2
  if name == 'uni_instruct':  # a discriminator for the ratio and a GAN term (official code)
    m.gan_weight_generator = 1e-2
    m.gan_weight_discriminator = 1e-2


# image set -> (teacher, batch size, steps, evaluation samples per model: half of the digits
# test split's 359 images; 1,000 of Fashion-MNIST's 10,000, as its teacher's run)
IMAGE_DISTILLATION = {
    'digits': ('bundled:digits', 64, 1000, 179),
    'fashion_mnist': ('bundled:fashion_mnist', 32, 1000, 1000),
}


def image_distill_config(name: str, method: str) -> ml_collections.ConfigDict:
  """One-step distillation, or a few-step flow map (onestep_jax.methods.flow_map_config), of the
  bundled teacher of image set `name` with `method` (`<method>` or `<method>:<divergence>`); the
  networks' settings and sigma_data come from the teacher at start-up, and every student starts
  as the teacher."""
  from onestep_jax.methods.flow_map_config import FLOW_MAP_VARIANTS, flow_map_method_fields
  method, divergence = method_and_divergence(method)
  teacher, batch_size, steps, eval_samples = IMAGE_DISTILLATION[name]
  c = base_config()
  c.data.name = name
  c.net.name = 'song_unet'  # replaced by the teacher's network at start-up
  m = c.method
  if method in FLOW_MAP_VARIANTS:  # student/<metric>@1, @2, @4, @8
    flow_map_method_fields(m, method)
    m.lr = 1e-4  # Adam learning rate of the student (sCM, AYF: 1e-4 at their scale; not tuned)
    if 'warmup_steps' in m:
      m.warmup_steps = steps // 2  # tangent warm-up over half the run
    if method == 'pd':  # rounds of 8, 4, 2 and 1 student steps, a quarter of the run each
      m.teacher_steps = 16
      m.round_steps = steps // 4
  else:
    one_step_method_fields(m, method)
    if divergence:
      m.divergence = divergence
    m.lr_generator = 2e-5  # generator learning rate
    if method == 'diffratio':
      m.lr_ratio = 1e-4  # classifier learning rate
      m.ratio_warmup_steps = 100  # the classifier's head starts at random: a short warm-up
    else:
      m.lr_fake_score = 2e-5  # fake-score (and discriminator) learning rate
      m.fake_score_warmup_steps = 0  # the fake score starts as the teacher: no warm-up needed
    if 'regression_pairs' in m:
      m.regression_pairs = 512  # DMD: teacher samples at 35 network evaluations each
    if method == 'uni_instruct':  # the official code's form: with the exact one, forward KL
      m.projection_ratio_term = False  # diverged on digits (docs/RESULTS.md; losses/uni_instruct)
  m.teacher = teacher
  # Generator and fake score start as the teacher (SiD, DMD2); a flow-map student as the teacher
  # with its second time embedding at zero.
  m.init_from_teacher = True
  m.ema_halflife_nimg = 10_000.0  # EMA half-life of the generator in samples
  c.train.batch_size = batch_size
  c.train.num_steps = steps
  c.train.save_every = 250
  c.eval.num_samples = eval_samples
  c.eval.batch_size = min(eval_samples, 250)
  return c
