"""SongUNet: the DDPM++ / NCSN++ U-Nets of Song et al. (arXiv 2011.13456) as configured in EDM
(Karras et al. 2022, arXiv 2206.00364, App. F.2), NHWC Flax port of NVlabs/edm `SongUNet`.

Submodule names are the PyTorch names with `enc.` / `dec.` written `enc_` / `dec_`
(e.g. `enc_8x8_conv`), so that `onestep_jax.convert.edm` maps checkpoints one to one.
Dropout uses the rng stream 'dropout', label dropout the stream 'label_dropout'.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from onestep_jax.nets.edm_layers import (Conv2d, FourierEmbedding, GroupNorm, InitSpec, Linear,
                                         PositionalEmbedding, UNetBlock, add_second_time,
                                         augment_input, check_unet_inputs, conditioning_labels)

EMBEDDINGS = {
    'positional': functools.partial(PositionalEmbedding, endpoint=True),
    'fourier': FourierEmbedding,
}
ENCODER_TYPES = ('standard', 'skip', 'residual')
DECODER_TYPES = ('standard', 'skip')


def _check_choice(option: str, value: str, valid) -> None:
  if value not in valid:
    raise ValueError(f'SongUNet: unknown {option} {value!r}; valid: {sorted(valid)}')


class SongUNet(nn.Module):
  """DDPM++ (defaults) / NCSN++ U-Net; F(x [B,H,W,C], noise_labels [B]) -> [B,H,W,out].

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
  model_channels: int = 128  # base multiplier for the number of channels
  channel_mult: Sequence[int] = (1, 2, 2, 2)  # per-resolution multipliers of model_channels
  channel_mult_emb: int = 4  # multiplier for the dimensionality of the embedding vector
  num_blocks: int = 4  # number of residual blocks per resolution
  attn_resolutions: Sequence[int] = (16,)  # resolutions with self-attention
  dropout: float = 0.10  # dropout probability of intermediate activations
  label_dropout: float = 0.0  # probability of zeroing class labels (classifier-free guidance)
  embedding_type: str = 'positional'  # 'positional' for DDPM++, 'fourier' for NCSN++
  channel_mult_noise: int = 1  # noise embedding size multiplier: 1 for DDPM++, 2 for NCSN++
  encoder_type: str = 'standard'  # 'standard' (DDPM++), 'skip', 'residual' (NCSN++)
  decoder_type: str = 'standard'  # 'standard' (DDPM++ and NCSN++), 'skip'
  resample_filter: Sequence[float] = (1, 1)  # [1,1] for DDPM++, [1,3,3,1] for NCSN++

  @nn.compact
  def __call__(self, x, noise_labels, class_labels: Optional[jnp.ndarray] = None,
               augment_labels: Optional[jnp.ndarray] = None, *, train: bool = False,
               return_features: bool = False,
               second_time_labels: Optional[jnp.ndarray] = None):
    _check_choice('embedding_type', self.embedding_type, EMBEDDINGS)
    _check_choice('encoder_type', self.encoder_type, ENCODER_TYPES)
    _check_choice('decoder_type', self.decoder_type, DECODER_TYPES)
    check_unet_inputs('SongUNet', x, noise_labels, self.in_channels)
    batch = x.shape[0]
    emb_channels = self.model_channels * self.channel_mult_emb
    noise_channels = self.model_channels * self.channel_mult_noise
    init = InitSpec('xavier_uniform')
    init_zero = InitSpec('xavier_uniform', weight=1e-5)
    init_attn = InitSpec('xavier_uniform', weight=float(np.sqrt(0.2)))
    block = functools.partial(
        UNetBlock, num_heads=1, dropout=self.dropout, skip_scale=float(np.sqrt(0.5)), eps=1e-6,
        resample_filter=self.resample_filter, resample_proj=True, adaptive_scale=False,
        init_spec=init, init_zero=init_zero, init_attn=init_attn)
    resample = dict(resample_filter=self.resample_filter)

    # Mapping; the embedding is used as [sin, cos].
    emb = EMBEDDINGS[self.embedding_type](noise_channels, name='map_noise')(noise_labels)
    emb = emb.reshape(batch, 2, -1)[:, ::-1].reshape(batch, -1)
    if self.label_dim:
      labels = conditioning_labels(self, class_labels, batch=batch, dim=self.label_dim,
                                   rate=self.label_dropout, train=train)
      emb = emb + Linear(noise_channels, init_spec=init, name='map_label')(
          labels * np.sqrt(self.label_dim))
    if self.augment_dim:
      augment = augment_input(augment_labels, batch=batch, dim=self.augment_dim)
      map_augment = Linear(noise_channels, use_bias=False, init_spec=init, name='map_augment')
      emb = emb + map_augment(augment)
    emb = add_second_time(emb, second_time_labels, num_channels=noise_channels)
    emb = nn.silu(Linear(emb_channels, init_spec=init, name='map_layer0')(emb))
    emb = nn.silu(Linear(emb_channels, init_spec=init, name='map_layer1')(emb))

    # Encoder.
    skips = []
    aux = x
    cout = self.model_channels
    for level, mult in enumerate(self.channel_mult):
      res = f'{self.img_resolution >> level}x{self.img_resolution >> level}'
      if level == 0:
        x = Conv2d(cout, 3, init_spec=init, name=f'enc_{res}_conv')(x)
        skips.append(x)
      else:
        x = block(cout, down=True, name=f'enc_{res}_down')(x, emb, train=train)
        skips.append(x)
        if self.encoder_type == 'skip':
          aux = Conv2d(aux.shape[-1], 0, down=True, name=f'enc_{res}_aux_down', **resample)(aux)
          x = skips[-1] = x + Conv2d(cout, 1, init_spec=init, name=f'enc_{res}_aux_skip')(aux)
        if self.encoder_type == 'residual':
          aux_conv = Conv2d(cout, 3, down=True, fused_resample=True, init_spec=init,
                            name=f'enc_{res}_aux_residual', **resample)
          x = skips[-1] = aux = (x + aux_conv(aux)) / np.sqrt(2)
      cout = self.model_channels * mult
      attention = (self.img_resolution >> level) in self.attn_resolutions
      for idx in range(self.num_blocks):
        x = block(cout, attention=attention, name=f'enc_{res}_block{idx}')(x, emb, train=train)
        skips.append(x)

    features = x  # the bottleneck: the encoder's output, the input of the decoder

    # Decoder; every block{idx} takes the concatenation with the matching encoder output.
    aux = None
    last = len(self.channel_mult) - 1
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = f'{self.img_resolution >> level}x{self.img_resolution >> level}'
      if level == last:
        x = block(cout, attention=True, name=f'dec_{res}_in0')(x, emb, train=train)
        x = block(cout, name=f'dec_{res}_in1')(x, emb, train=train)
      else:
        x = block(cout, up=True, name=f'dec_{res}_up')(x, emb, train=train)
      cout = self.model_channels * mult
      for idx in range(self.num_blocks + 1):
        attention = idx == self.num_blocks and (self.img_resolution >> level) in self.attn_resolutions
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        x = block(cout, attention=attention, name=f'dec_{res}_block{idx}')(x, emb, train=train)
      if self.decoder_type == 'skip' or level == 0:
        if self.decoder_type == 'skip' and level < last:
          aux = Conv2d(self.out_channels, 0, up=True, name=f'dec_{res}_aux_up', **resample)(aux)
        tmp = GroupNorm(eps=1e-6, name=f'dec_{res}_aux_norm')(x, silu=True)
        tmp = Conv2d(self.out_channels, 3, init_spec=init_zero, name=f'dec_{res}_aux_conv')(tmp)
        aux = tmp if aux is None else tmp + aux
    return (aux, features) if return_features else aux
