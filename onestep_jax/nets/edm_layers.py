"""Building blocks of the EDM U-Nets (Karras et al. 2022, arXiv 2206.00364, App. F.2), NHWC.

Numerically equivalent re-implementations of the layers of NVlabs/edm `training/networks.py`
(written from its description; no code copied). Parameters carry the PyTorch names (`weight`,
`bias`, `freqs`) so that `onestep_jax.convert.edm` maps checkpoints one to one; Conv2d weights are
HWIO and Linear weights [in, out]. Resampling filters are constants derived from the module
settings; at `init` they are also recorded in the `'buffers'` collection (PyTorch layout
[1, 1, k, k]) so that the converter knows the names of the PyTorch buffers. `apply` needs only
`{'params': ...}`.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from onestep_jax.nets import logistic
from onestep_jax.nets.fusion_fence import fence, one_core_in_ynn

BUFFERS = 'buffers'  # collection that records the PyTorch buffers at init (names and shapes)
_STATISTICS = 'group_norm_statistics'  # the group norm's per-example mean and 1 / std
_KEEP_STATISTICS = jax.checkpoint_policies.save_only_these_names(_STATISTICS)


class InitSpec(NamedTuple):
  """Weight initialisation of a layer: `mode` of `INIT_MODES`, scaled by `weight` / `bias`."""
  mode: str = 'kaiming_normal'
  weight: float = 1.0
  bias: float = 0.0


# mode -> (uniform?, standard scale from (fan_in, fan_out)); uniform draws are in [-s, s].
INIT_MODES: dict[str, tuple[bool, Callable[[int, int], float]]] = {
    'xavier_uniform': (True, lambda fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out))),
    'xavier_normal': (False, lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    'kaiming_uniform': (True, lambda fan_in, fan_out: math.sqrt(3 / fan_in)),
    'kaiming_normal': (False, lambda fan_in, fan_out: math.sqrt(1 / fan_in)),
}


def scaled_init(mode: str, *, fan_in: int, fan_out: int, scale: float) -> Callable:
  """Flax initializer drawing from init `mode` with the layer's fans, multiplied by `scale`."""
  if mode not in INIT_MODES:
    raise ValueError(f'unknown init mode {mode!r}; valid modes: {sorted(INIT_MODES)}')
  uniform, std_fn = INIT_MODES[mode]
  std = std_fn(fan_in, fan_out) * scale

  def init(key, shape, dtype=jnp.float32):
    if uniform:
      return std * jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    return std * jax.random.normal(key, shape, dtype)

  return init


def param(module: nn.Module, name: str, init: Callable, shape: Sequence[int]) -> jax.Array:
  """`module.param(name, init, shape)` without Flax's check of an existing parameter's shape
  by tracing `init` (`jax.eval_shape` of the initialiser, random draws included, on every
  apply): the shapes are compared directly. That check took about half the time of tracing a
  U-Net's forward pass (docs/RESULTS.md, "Tracing the U-Nets"). Draws the same keys as
  `module.param`."""
  shape = tuple(shape)
  value = module.variable('params', name, lambda: init(module.make_rng('params'), shape)).value
  if jnp.shape(value) != shape:
    raise ValueError(f'{module.name}/{name}: the parameter has shape {jnp.shape(value)}, but the '
                     f'module builds {shape}; were the params made with other settings?')
  return value


def resample_kernel(resample_filter: Sequence[float]) -> np.ndarray:
  """Separable 2-D resampling kernel outer(f, f) / sum(f)^2, float32 [k, k]."""
  f = np.asarray(resample_filter, np.float32)
  return np.outer(f, f) / np.square(f.sum())


def _conv(x, w, pad: int):
  """PyTorch-style cross-correlation of NHWC `x` with HWIO `w`, symmetric zero padding; fenced
  from XLA:CPU's fusions where YNNPACK would run it, or its transpose, on one core
  (`fusion_fence`)."""
  cin, cout = w.shape[2], w.shape[3]
  fenced = w.shape[0] > 1 and (one_core_in_ynn(cin, cout) or one_core_in_ynn(cout, cin))
  y = jax.lax.conv_general_dilated(
      fence(x) if fenced else x, w, window_strides=(1, 1), padding=[(pad, pad), (pad, pad)],
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return fence(y) if fenced else y


def _taps(kernel: np.ndarray) -> np.ndarray:
  """The 1-D filter g of a separable kernel outer(g, g) with sum(g) = 1 (see resample_kernel)."""
  return np.asarray(kernel, np.float64).sum(axis=1)


def _filter_axis(x, taps: np.ndarray, axis: int, stride: int):
  """Correlation of `x` with 1-D `taps` along `axis` (no padding), keeping every stride-th output.

  A weighted sum of shifted slices: exact, and on CPU much cheaper to compile and differentiate
  than the equivalent grouped (depthwise) convolution.
  """
  n = x.shape[axis] - len(taps) + 1
  out = 0
  for a, t in enumerate(taps):
    index = [slice(None)] * x.ndim
    index[axis] = slice(a, a + n, stride)
    out = out + np.float32(t) * x[tuple(index)]
  return out


def _zero_interleave(x, axis: int):
  """Inserts a zero after every element but the last along `axis` (n -> 2n - 1)."""
  shape = list(x.shape)
  shape[axis] *= 2
  z = jnp.stack([x, jnp.zeros_like(x)], axis=axis + 1).reshape(shape)
  index = [slice(None)] * x.ndim
  index[axis] = slice(0, shape[axis] - 1)
  return z[tuple(index)]


def _is_box(taps: np.ndarray) -> bool:
  """Whether the 1-D taps are the two equal ones of the box filter [1, 1] (DDPM++, ADM)."""
  return len(taps) == 2 and taps[0] == taps[1]


def downsample(x, kernel: np.ndarray, pad: int):
  """Per-channel filtering with the separable `kernel` and stride 2 (PyTorch grouped conv2d).

  The unpadded box filter of even-sized images is the mean of each 2x2 block: one reduction of
  a reshaped view, with no slices or pads to copy, forward or backward.
  """
  g = _taps(kernel)
  if _is_box(g) and pad == 0 and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return _filter_axis(_filter_axis(x, g, 1, 2), g, 2, 2)


def upsample(x, kernel: np.ndarray, pad: int):
  """Per-channel transposed convolution with 4 * `kernel`, stride 2 (PyTorch conv_transpose2d).

  A transposed convolution is a correlation of the 2x zero-interleaved input with the flipped
  kernel, padded by k - 1 - pad on each side; the kernel is separable, 4 g g^T = (2g)(2g)^T.
  With the unpadded box filter that is each pixel repeated over a 2x2 block, exactly, which is
  made as a broadcast with no zeros interleaved.
  """
  taps = _taps(kernel)
  if _is_box(taps) and pad == 0:
    b, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
  g = 2 * taps[::-1]
  p = len(g) - 1 - pad
  x = _zero_interleave(_zero_interleave(x, 1), 2)
  x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return _filter_axis(_filter_axis(x, g, 1, 1), g, 2, 1)


class Linear(nn.Module):
  """Fully connected layer, weight [in, out]."""
  features: int
  use_bias: bool = True
  init_spec: InitSpec = InitSpec()

  @nn.compact
  def __call__(self, x):
    fans = dict(fan_in=x.shape[-1], fan_out=self.features)
    w = param(self, 'weight', scaled_init(self.init_spec.mode, scale=self.init_spec.weight, **fans),
              (x.shape[-1], self.features))
    x = x @ w
    if self.use_bias:
      x = x + param(self, 'bias', scaled_init(self.init_spec.mode, scale=self.init_spec.bias, **fans),
                    (self.features,))
    return x


def conv_params(module: nn.Module, init_spec: InitSpec, kernel: int, cin: int, cout: int, *,
                use_bias: bool = True) -> tuple[jax.Array, Optional[jax.Array]]:
  """`module`'s convolution weight [kernel, kernel, cin, cout] 'weight' and bias [cout] 'bias'
  (None without), drawn by `init_spec` with the convolution's fans."""
  fans = dict(fan_in=cin * kernel * kernel, fan_out=cout * kernel * kernel)
  w = param(module, 'weight', scaled_init(init_spec.mode, scale=init_spec.weight, **fans),
            (kernel, kernel, cin, cout))
  b = (param(module, 'bias', scaled_init(init_spec.mode, scale=init_spec.bias, **fans), (cout,))
       if use_bias else None)
  return w, b


class Conv2d(nn.Module):
  """Convolution (kernel 0 = none) with optional 2x up/down resampling by a separable filter.

  Non-fused: resample, then convolve. `fused_resample` changes the order and padding as in EDM:
  up = transposed filter then conv; down = conv with extra padding then strided filter.
  """
  out_channels: int
  kernel: int
  use_bias: bool = True
  up: bool = False
  down: bool = False
  resample_filter: Sequence[float] = (1, 1)
  fused_resample: bool = False
  init_spec: InitSpec = InitSpec()

  @nn.compact
  def __call__(self, x):
    if self.up and self.down:
      raise ValueError('Conv2d cannot both upsample and downsample')
    w = b = f = None
    if self.kernel:
      w, b = conv_params(self, self.init_spec, self.kernel, x.shape[-1], self.out_channels,
                         use_bias=self.use_bias)
    if self.up or self.down:
      f = resample_kernel(self.resample_filter)
      self.sow(BUFFERS, 'resample_filter', f[None, None], init_fn=lambda: None,
               reduce_fn=lambda _, v: v)
    w_pad = self.kernel // 2 if w is not None else 0
    f_pad = (f.shape[0] - 1) // 2 if f is not None else 0

    if self.fused_resample and self.up and w is not None:
      x = upsample(x, f, max(f_pad - w_pad, 0))
      x = _conv(x, w, max(w_pad - f_pad, 0))
    elif self.fused_resample and self.down and w is not None:
      x = _conv(x, w, w_pad + f_pad)
      x = downsample(x, f, 0)
    else:
      if self.up:
        x = upsample(x, f, f_pad)
      if self.down:
        x = downsample(x, f, f_pad)
      if w is not None:
        x = _conv(x, w, w_pad)
    if b is not None:
      x = x + b
    return x


class AttentionProjection(nn.Module):
  """The attention's 1x1 query/key/value projection: parameters of a `Conv2d(3 C, 1)` (weight
  [1, 1, C, 3 C], its outputs in PyTorch's order (head, channel, q/k/v)), applied as three matrix
  products with the weight's strided column slices, so that no activation is sliced; the key's
  1/sqrt(channels per head) of softmax(q.k/sqrt(d)) is folded into its weight and bias. Returns
  q, k, v, each [B * heads, H * W, C / heads] (example-major): the attention's products are then
  3-D, with no head axis for XLA:CPU to copy between layouts (a one-head axis included)."""
  heads: int
  init_spec: InitSpec = InitSpec()

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c % self.heads:
      raise ValueError(f'attention: {c} channels cannot be split into {self.heads} heads')
    w, bias = conv_params(self, self.init_spec, 1, c, 3 * c)
    scales = (1.0, 1.0 / np.sqrt(c // self.heads), 1.0)
    return tuple(split_heads(jnp.dot(x, w[0, 0, :, j::3] * s) + bias[j::3] * s, self.heads)
                 for j, s in enumerate(scales))


def split_heads(x, heads: int):
  """[B, ..., heads * D] -> [B * heads, prod(...), D]; a transpose only when heads > 1."""
  b, n, d = x.shape[0], math.prod(x.shape[1:-1]), x.shape[-1] // heads
  if heads == 1:
    return x.reshape(b, n, d)
  return x.reshape(b, n, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, n, d)


def attention(q, k, v, shape):
  """softmax(q k^T) v of each head (the key already scaled), with its logits and softmax in
  float32; q, k, v [B * heads, N, D] (`split_heads`), returned as `shape` = [B, ..., heads * D]."""
  logits = jnp.einsum('nqd,nkd->nqk', q.astype(jnp.float32), k.astype(jnp.float32))
  return merge_heads(jnp.einsum('nqk,nkd->nqd', softmax(logits).astype(v.dtype), v), shape)


def merge_heads(x, shape):
  """The inverse of `split_heads`: [B * heads, N, D] -> `shape` = [B, ..., heads * D]."""
  heads = x.shape[0] // shape[0]
  if heads > 1:
    x = x.reshape(shape[0], heads, x.shape[1], x.shape[2]).transpose(0, 2, 1, 3)
  return x.reshape(shape)


@jax.custom_jvp
def softmax(x):
  """Softmax over the last axis, differentiated as y (dx - sum(y dx)): two element-wise passes and
  one reduction, where this JAX's `jax.nn.softmax` (its `jax_softmax_custom_jvp` off by default)
  differentiates through the maximum, the exponential and the division."""
  e = jnp.exp(x - jax.lax.stop_gradient(x.max(-1, keepdims=True)))
  return e / e.sum(-1, keepdims=True)


@softmax.defjvp
def _softmax_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  y = softmax(x)
  return y, y * (dx - (y * dx).sum(-1, keepdims=True))


class GroupNorm(nn.Module):
  """Group normalisation with min(num_groups, C // min_channels_per_group) groups (biased var),
  optionally followed by the U-Net block's modulation and SiLU:
  `silu(shift + GN(x) * (scale + 1))`, each part only when asked for.

  The group statistics are per-channel sums over the spatial axes, then summed over each
  group's channels: on XLA:CPU this runs forward and backward 3.5-10x faster than reducing the
  [..., groups, C // groups] view in one go (benchmarks/group_norm_speed.py).

  Under differentiation only the input and the per-example statistics are kept for the backward
  pass (`jax.checkpoint`), which recomputes the normalised, modulated and activated values from
  them. Without it XLA:CPU held per-example scales broadcast to the activation's full shape from
  the forward to the backward pass: the EDM reference step's temporary buffers fall from 303 to
  221 MB (docs/RESULTS.md)."""
  num_groups: int = 32
  min_channels_per_group: int = 4
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x, *, scale=None, shift=None, silu: bool = False):
    c = x.shape[-1]
    groups = min(self.num_groups, c // self.min_channels_per_group)
    if groups < 1 or c % groups:
      raise ValueError(f'GroupNorm: {c} channels cannot be split into {groups} groups')
    weight = param(self, 'weight', nn.initializers.ones, (c,))
    bias = param(self, 'bias', nn.initializers.zeros, (c,))
    normalise = _group_normaliser(x.ndim, c, groups, math.prod(x.shape[1:-1]), self.eps,
                                  scale is not None, shift is not None, silu)
    return normalise(x, weight, bias, scale, shift)


@jax.custom_jvp
def _scale(x, a):
  """x * a for a per-example, per-channel `a` [B, 1, ..., 1, C]. Its derivative multiplies by `a`
  broadcast over the [B, pixels, C] view of the tangent, so that XLA:CPU does not share one
  full-size broadcast of `a` between the recomputed forward product and the backward one: it
  wrote such a shared broadcast out to memory for its two YNNPACK fusions, at every group norm of
  a gradient pass (docs/RESULTS.md, "Group norms scale without a shared broadcast")."""
  return x * a


@_scale.defjvp
def _scale_jvp(primals, tangents):
  (x, a), (dx, da) = primals, tangents
  b, c = x.shape[0], x.shape[-1]
  return x * a, (dx.reshape(b, -1, c) * a.reshape(b, 1, c)).reshape(x.shape) + x * da


@functools.cache
def _group_normaliser(ndim: int, channels: int, groups: int, pixels: int, eps: float,
                      has_scale: bool, has_shift: bool, silu: bool) -> Callable:
  """GroupNorm's checkpointed body for one configuration. One function object per configuration
  lets JAX reuse its traces across the U-Net's group norms of the same shape."""
  spatial = tuple(range(1, ndim - 1))
  per_group = channels // groups
  count = per_group * pixels

  def group_mean(y):  # [B, 1, ..., 1, C]: the mean of y over each example's group
    sums = y.sum(spatial).reshape(y.shape[0], groups, per_group).sum(-1)
    return jnp.repeat(sums / count, per_group, axis=-1).reshape(
        (y.shape[0],) + (1,) * len(spatial) + (channels,))

  def normalise(x, weight, bias, scale, shift):
    mean = checkpoint_name(group_mean(x), _STATISTICS)
    centred = x - mean
    rstd = checkpoint_name(jax.lax.rsqrt(group_mean(jnp.square(centred)) + eps), _STATISTICS)
    y = _scale(centred, rstd * weight) + bias
    if has_scale:
      y = _scale(y, scale + 1)
    if has_shift:
      y = shift + y
    return logistic.silu(y) if silu else y

  return jax.checkpoint(normalise, policy=_KEEP_STATISTICS)


class PositionalEmbedding(nn.Module):
  """Sinusoidal noise embedding [cos, sin] (DDPM++ / ADM); `endpoint` puts the last frequency
  at 1 / max_positions."""
  num_channels: int
  max_positions: int = 10000
  endpoint: bool = False

  def __call__(self, x):
    half = self.num_channels // 2
    freqs = jnp.arange(half, dtype=jnp.float32) / (half - (1 if self.endpoint else 0))
    freqs = (1 / self.max_positions) ** freqs
    x = x[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class FourierEmbedding(nn.Module):
  """Random Fourier features [cos, sin] of the noise label (NCSN++).

  The frequencies are a PyTorch buffer; here they live in `params` (name `freqs`, drawn from
  N(0, scale^2)) behind a stop_gradient, so they never change under gradient-based training.
  """
  num_channels: int
  scale: float = 16

  @nn.compact
  def __call__(self, x):
    freqs = param(self, 'freqs', nn.initializers.normal(self.scale), (self.num_channels // 2,))
    x = x[:, None] * (2 * np.pi * jax.lax.stop_gradient(freqs))[None, :]
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class UNetBlock(nn.Module):
  """Residual block of the EDM U-Nets: GroupNorm-SiLU-conv, embedding injection, dropout, conv,
  skip, optional multi-head self-attention. Input channels are taken from `x`.

  `adaptive_scale` injects the embedding as scale and shift after norm1 (ADM); otherwise it is
  added before norm1 (DDPM++ / NCSN++).
  """
  out_channels: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: Optional[int] = None  # None: out_channels // channels_per_head
  channels_per_head: int = 64
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  resample_filter: Sequence[float] = (1, 1)
  resample_proj: bool = False  # 1x1 conv on the skip path even when channels do not change
  adaptive_scale: bool = True
  init_spec: InitSpec = InitSpec()
  init_zero: InitSpec = InitSpec(weight=0.0)
  init_attn: Optional[InitSpec] = None  # None: `init_spec`

  @property
  def heads(self) -> int:
    if not self.attention:
      return 0
    return self.num_heads if self.num_heads is not None else self.out_channels // self.channels_per_head

  @nn.compact
  def __call__(self, x, emb, *, train: bool = False):
    cin, cout = x.shape[-1], self.out_channels
    resample = dict(up=self.up, down=self.down, resample_filter=self.resample_filter)
    orig = x
    x = GroupNorm(eps=self.eps, name='norm0')(x, silu=True)
    x = Conv2d(cout, 3, init_spec=self.init_spec, name='conv0', **resample)(x)

    affine = Linear(cout * (2 if self.adaptive_scale else 1), init_spec=self.init_spec,
                    name='affine')
    params = affine(emb)
    params = params[:, None, None, :].astype(x.dtype)
    norm1 = GroupNorm(eps=self.eps, name='norm1')
    if self.adaptive_scale:
      scale, shift = jnp.split(params, 2, axis=-1)
      x = norm1(x, scale=scale, shift=shift, silu=True)
    else:
      x = norm1(x + params, silu=True)

    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = Conv2d(cout, 3, init_spec=self.init_zero, name='conv1')(x)
    if cout != cin or self.up or self.down:
      kernel = 1 if self.resample_proj or cout != cin else 0
      orig = Conv2d(cout, kernel, init_spec=self.init_spec, name='skip', **resample)(orig)
    x = (x + orig) * self.skip_scale

    heads = self.heads
    if heads:
      q, k, v = AttentionProjection(heads, init_spec=self.init_attn or self.init_spec,
                                    name='qkv')(GroupNorm(eps=self.eps, name='norm2')(x))
      a = attention(q, k, v, x.shape)
      x = (Conv2d(cout, 1, init_spec=self.init_zero, name='proj')(a) + x) * self.skip_scale
    return x


def add_second_time(emb, second_time_labels, *, num_channels: int):
  """emb + a zero-initialised Linear of the positional embedding of a second time [B] (the
  flow-map students of onestep_jax.methods.flow_map); `emb` itself when the labels are None.

  Zero weights and bias make the sum exactly `emb` at init, so a U-Net given a teacher's
  parameters plus this new layer starts as the teacher.
  """
  if second_time_labels is None:
    return emb
  pos = PositionalEmbedding(num_channels, endpoint=True, name='map_second_time_noise')(
      jnp.reshape(second_time_labels, (-1,)))
  return emb + Linear(emb.shape[-1], init_spec=InitSpec(weight=0.0, bias=0.0),
                      name='map_second_time')(pos)


def check_unet_inputs(name: str, x, noise_labels, in_channels: int) -> None:
  """Raises ValueError unless x is [B, H, W, in_channels] and noise_labels is [B]."""
  if x.ndim != 4 or x.shape[-1] != in_channels:
    raise ValueError(f'{name} expects x of shape [B, H, W, {in_channels}], got {x.shape}')
  if noise_labels.shape != (x.shape[0],):
    raise ValueError(f'{name} expects noise_labels of shape [{x.shape[0]}], '
                     f'got {noise_labels.shape}')


def conditioning_labels(module: nn.Module, labels, *, batch: int, dim: int, rate: float,
                        train: bool):
  """Class labels [B, dim] (None = all zeros, as EDMPrecond does), each example's labels zeroed
  with probability `rate` in training (classifier-free guidance; rng stream 'label_dropout')."""
  labels = jnp.zeros((batch, dim), jnp.float32) if labels is None else jnp.asarray(labels,
                                                                                 jnp.float32)
  if labels.shape[-1] != dim:
    raise ValueError(f'class_labels must have {dim} columns, got shape {labels.shape}')
  if train and rate:
    keep = jax.random.uniform(module.make_rng('label_dropout'), (batch, 1)) >= rate
    labels = labels * keep.astype(labels.dtype)
  return labels


def augment_input(labels, *, batch: int, dim: int):
  """Augmentation labels [B, dim]; None becomes zeros, which is exact because both EDM networks
  map them without bias (and it makes `init` create the parameters either way)."""
  labels = jnp.zeros((batch, dim), jnp.float32) if labels is None else jnp.asarray(labels,
                                                                                 jnp.float32)
  if labels.shape[-1] != dim:
    raise ValueError(f'augment_labels must have {dim} columns, got shape {labels.shape}')
  return labels
