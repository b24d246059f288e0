"""DhariwalUNet: the ADM U-Net of Dhariwal & Nichol (arXiv 2105.05233) as configured in EDM
(Karras et al. 2022, arXiv 2206.00364, App. F.2), NHWC Flax port of NVlabs/edm `DhariwalUNet`.

Submodule names are the PyTorch names with `enc.` / `dec.` written `enc_` / `dec_`. Dropout uses
the rng stream 'dropout', label dropout the stream 'label_dropout'.
"""
from __future__ import annotations

import functools
from typing import ClassVar, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from onestep_jax.nets.edm_layers import (Conv2d, GroupNorm, InitSpec, Linear, PositionalEmbedding,
                                         UNetBlock, add_second_time, augment_input,
                                         check_unet_inputs, conditioning_labels)


class DhariwalUNet(nn.Module):
  """ADM U-Net; F(x [B,H,W,C], noise_labels [B]) -> [B,H,W,out]. Output is exactly 0 at init.

  With `return_features=True` the call returns `(output, features)`, where `features` is the
  bottleneck: the encoder's output at the lowest resolution as it enters the decoder (the output
  of `enc_{r}x{r}_block{num_blocks - 1}`, the input of `dec_{r}x{r}_in0`), NHWC [B, r, r,
  model_channels * channel_mult[-1]] with r = img_resolution / 2^(len(channel_mult) - 1) (for
  num_blocks >= 1). The output is the same as without the flag, and no parameter is added.
  """
  img_resolution: int  # image resolution at input/output
  in_channels: int  # number of colour channels at input
  out_channels: int  # number of colour channels at output
  label_dim: int = 0  # number of class labels, 0 = unconditional
  augment_dim: int = 0  # augmentation label dimensionality, 0 = no augmentation
  model_channels: int = 192  # base multiplier for the number of channels
  channel_mult: Sequence[int] = (1, 2, 3, 4)  # per-resolution multipliers of model_channels
  channel_mult_emb: int = 4  # multiplier for the dimensionality of the embedding vector
  num_blocks: int = 3  # number of residual blocks per resolution
  attn_resolutions: Sequence[int] = (32, 16, 8)  # resolutions with self-attention
  dropout: float = 0.10  # dropout probability of intermediate activations
  label_dropout: float = 0.0  # probability of zeroing class labels (classifier-free guidance)

  resample_filter: ClassVar[tuple[int, ...]] = (1, 1)  # fixed: ADM resamples with a box filter

  @nn.compact
  def __call__(self, x, noise_labels, class_labels: Optional[jnp.ndarray] = None,
               augment_labels: Optional[jnp.ndarray] = None, *, train: bool = False,
               return_features: bool = False,
               second_time_labels: Optional[jnp.ndarray] = None):
    check_unet_inputs('DhariwalUNet', x, noise_labels, self.in_channels)
    batch = x.shape[0]
    emb_channels = self.model_channels * self.channel_mult_emb
    init = InitSpec('kaiming_uniform', weight=float(np.sqrt(1 / 3)), bias=float(np.sqrt(1 / 3)))
    init_zero = InitSpec('kaiming_uniform', weight=0.0, bias=0.0)
    block = functools.partial(UNetBlock, channels_per_head=64, dropout=self.dropout,
                              init_spec=init, init_zero=init_zero,
                              resample_filter=self.resample_filter)

    # Mapping.
    emb = PositionalEmbedding(self.model_channels, name='map_noise')(noise_labels)
    if self.augment_dim:
      augment = augment_input(augment_labels, batch=batch, dim=self.augment_dim)
      emb = emb + Linear(self.model_channels, use_bias=False, init_spec=init_zero,
                         name='map_augment')(augment)
    emb = add_second_time(emb, second_time_labels, num_channels=self.model_channels)
    emb = nn.silu(Linear(emb_channels, init_spec=init, name='map_layer0')(emb))
    emb = Linear(emb_channels, init_spec=init, name='map_layer1')(emb)
    if self.label_dim:
      labels = conditioning_labels(self, class_labels, batch=batch, dim=self.label_dim,
                                   rate=self.label_dropout, train=train)
      label_init = InitSpec('kaiming_normal', weight=float(np.sqrt(self.label_dim)))
      map_label = Linear(emb_channels, use_bias=False, init_spec=label_init, name='map_label')
      emb = emb + map_label(labels)
    emb = nn.silu(emb)

    # Encoder.
    skips = []
    cout = self.model_channels * self.channel_mult[0]
    for level, mult in enumerate(self.channel_mult):
      res = f'{self.img_resolution >> level}x{self.img_resolution >> level}'
      if level == 0:
        x = Conv2d(cout, 3, init_spec=init, name=f'enc_{res}_conv')(x)
      else:
        x = block(cout, down=True, name=f'enc_{res}_down')(x, emb, train=train)
      skips.append(x)
      cout = self.model_channels * mult
      attention = (self.img_resolution >> level) in self.attn_resolutions
      for idx in range(self.num_blocks):
        x = block(cout, attention=attention, name=f'enc_{res}_block{idx}')(x, emb, train=train)
        skips.append(x)

    features = x  # the bottleneck: the encoder's output, the input of the decoder

    # Decoder; every block{idx} takes the concatenation with the matching encoder output.
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = f'{self.img_resolution >> level}x{self.img_resolution >> level}'
      if level == len(self.channel_mult) - 1:
        x = block(cout, attention=True, name=f'dec_{res}_in0')(x, emb, train=train)
        x = block(cout, name=f'dec_{res}_in1')(x, emb, train=train)
      else:
        x = block(cout, up=True, name=f'dec_{res}_up')(x, emb, train=train)
      cout = self.model_channels * mult
      attention = (self.img_resolution >> level) in self.attn_resolutions
      for idx in range(self.num_blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        x = block(cout, attention=attention, name=f'dec_{res}_block{idx}')(x, emb, train=train)
    x = GroupNorm(name='out_norm')(x, silu=True)
    out = Conv2d(self.out_channels, 3, init_spec=init_zero, name='out_conv')(x)
    return (out, features) if return_features else out
