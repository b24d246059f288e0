"""An MLP denoiser backbone for low-dimensional data, conditioned on a noise level and labels.

Same calling convention as the EDM U-Nets: `F(x, noise_labels, class_labels, augment_labels)`,
so `onestep_jax.diffusion.preconditioning.edm_denoiser` wraps either into D(x, sigma, labels).
All three networks take an optional second time, `second_time_labels` [B] (the flow maps of
onestep_jax.methods.flow_map condition on it); its embedding is added to the noise embedding
through a zero-initialised layer, so a network given teacher weights plus that fresh layer
computes exactly what the teacher computes.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def sinusoidal_embedding(t: jnp.ndarray, dim: int, max_period: float = 10_000.0) -> jnp.ndarray:
  """Transformer-style embedding [cos, sin] of a per-example scalar, shape [B, dim]."""
  if dim % 2:
    raise ValueError(f'embedding dimension must be even, got {dim}')
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class MLP(nn.Module):
  """Residual SiLU MLP with a noise-level embedding and optional one-hot class labels.

  With `return_features=True` the call returns `(output, features)`, where `features` [B,
  hidden_dim] is the last hidden activation: silu of the residual stream after the last hidden
  layer, i.e. the input of the final Dense. The output is the same as without the flag.
  """

  data_dim: int  # dimension of x (and of the output)
  hidden_dim: int = 256  # width of every hidden layer
  num_layers: int = 3  # number of hidden layers
  embedding_dim: int = 64  # width of the sinusoidal noise embedding
  label_dim: int = 0  # number of classes (0 = unconditional); labels are one-hot [B, label_dim]
  label_dropout: float = 0.0  # probability of zeroing a label in training (classifier-free guidance)
  noise_scale: float = 100.0  # noise_labels are multiplied by this before the sinusoidal embedding

  @nn.compact
  def __call__(self, x, noise_labels, class_labels: Optional[jnp.ndarray] = None,
               augment_labels: Optional[jnp.ndarray] = None, *, train: bool = False,
               return_features: bool = False,
               second_time_labels: Optional[jnp.ndarray] = None):
    del augment_labels  # low-dimensional data is not augmented
    if x.ndim != 2 or x.shape[-1] != self.data_dim:
      raise ValueError(f'MLP expects x of shape [B, {self.data_dim}], got {x.shape}')
    emb = sinusoidal_embedding(jnp.reshape(noise_labels, (-1,)) * self.noise_scale,
                               self.embedding_dim)
    emb = nn.Dense(self.hidden_dim)(emb)
    if self.label_dim:
      if class_labels is None:
        class_labels = jnp.zeros((x.shape[0], self.label_dim), x.dtype)
      if train and self.label_dropout:
        keep = jax.random.bernoulli(self.make_rng('label_dropout'), 1 - self.label_dropout,
                                    (x.shape[0], 1))
        class_labels = class_labels * keep
      emb = emb + nn.Dense(self.hidden_dim, use_bias=False)(class_labels.astype(x.dtype))
    if second_time_labels is not None:
      second = sinusoidal_embedding(jnp.reshape(second_time_labels, (-1,)) * self.noise_scale,
                                    self.embedding_dim)
      emb = emb + nn.Dense(self.hidden_dim, kernel_init=nn.initializers.zeros,
                           name='second_time')(second)
    emb = nn.silu(emb)
    h = nn.Dense(self.hidden_dim)(x)
    for _ in range(self.num_layers):
      h = h + nn.Dense(self.hidden_dim)(nn.silu(h + nn.Dense(self.hidden_dim)(emb)))
    features = nn.silu(h)
    out = nn.Dense(self.data_dim, kernel_init=nn.initializers.zeros)(features)
    return (out, features) if return_features else out
