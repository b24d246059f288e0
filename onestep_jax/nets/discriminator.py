"""A small GAN discriminator head on network features, with a class-projection term.

For image features (a U-Net bottleneck, NHWC) the head follows DMD2 (Yin et al. 2024, arXiv
2405.14867), whose discriminator is a stack of conv-GroupNorm-SiLU blocks with stride-2
downsampling on the bottleneck of the fake-score U-Net; here the blocks stop downsampling at 1x1
so that small bottlenecks (4x4, 7x7) fit, and the result is mean-pooled and mapped to a logit by a
Dense layer. Vector features (e.g. the MLP's last hidden activation) go through a SiLU MLP.
Class labels enter by projection (Miyato & Koyama 2018, arXiv 1802.05637):
logit = w . phi + b + <embed(y), phi>, where phi is the pooled feature.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp


class DiscriminatorHead(nn.Module):
  """Features [B, C] or NHWC [B, H, W, C] (+ one-hot labels [B, num_classes]) -> logits [B]."""
  hidden_dim: int = 256  # MLP width (vector features) / conv channels (image features)
  num_layers: int = 2  # hidden SiLU layers of the MLP for vector features
  num_blocks: int = 2  # conv3x3-GroupNorm-SiLU blocks for image features (stride 2 while H, W > 1)
  num_groups: int = 32  # GroupNorm groups; must divide hidden_dim
  num_classes: int = 0  # number of classes of the projection term (0 = unconditional)

  @nn.compact
  def __call__(self, features, labels: Optional[jnp.ndarray] = None):
    """Returns one logit per example, shape [B].

    With `num_classes` > 0, missing `labels` are all-zero labels, which give no projection term.
    """
    if features.ndim == 2:
      phi = features
      for _ in range(self.num_layers):
        phi = nn.silu(nn.Dense(self.hidden_dim)(phi))
    elif features.ndim == 4:
      h = features
      for _ in range(self.num_blocks):
        stride = 2 if min(h.shape[1:3]) > 1 else 1
        h = nn.Conv(self.hidden_dim, (3, 3), strides=stride, padding='SAME')(h)
        h = nn.silu(nn.GroupNorm(num_groups=self.num_groups)(h))
      phi = h.mean(axis=(1, 2))
    else:
      raise ValueError(f'DiscriminatorHead expects features [B, C] or [B, H, W, C], '
                       f'got shape {features.shape}')
    logits = nn.Dense(1)(phi)[:, 0]
    if labels is not None and not self.num_classes:
      raise ValueError('DiscriminatorHead got labels but num_classes = 0')
    if self.num_classes:
      batch = features.shape[0]
      if labels is None:
        labels = jnp.zeros((batch, self.num_classes), phi.dtype)
      if labels.shape != (batch, self.num_classes):
        raise ValueError(f'labels must have shape [{batch}, {self.num_classes}], '
                         f'got {labels.shape}')
      embed = nn.Dense(phi.shape[-1], use_bias=False, name='embed')(labels.astype(phi.dtype))
      logits = logits + jnp.sum(embed * phi, axis=-1)
    return logits
