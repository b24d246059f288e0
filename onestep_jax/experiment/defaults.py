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
  c.train.compilation_cache = True  # JAX persistent compilation cache in ~/.cache/onestep_jax

  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 5000  # samples per model for metrics (and for the data floors)
  c.eval.batch_size = 1000  # samples generated per call
  c.eval.seed = 1234  # seeds evaluation sampling
  c.eval.feature_extractor = ''  # image data: '' trains the library's classifier features
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
  c.eval.num_samples = 700 if name == 'digits' else 1000  # digits has 1,438 training images
  c.eval.batch_size = 250
  return c
