"""sCM's adaptive loss weighting w_phi(t) (Lu & Song, arXiv 2410.11081, Sec. 5)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from onestep_jax.nets.mlp import sinusoidal_embedding


class AdaptiveWeight(nn.Module):
  """w_phi(t) [B] of a per-example time [B]: a sinusoidal embedding, one SiLU layer and a
  zero-initialised output, so w = 0 (uniform weighting) at init."""

  hidden_dim: int = 128  # width of the hidden layer
  embedding_dim: int = 64  # width of the sinusoidal embedding
  time_scale: float = 100.0  # times are multiplied by this before the embedding

  @nn.compact
  def __call__(self, t):
    emb = sinusoidal_embedding(jnp.reshape(t, (-1,)) * self.time_scale, self.embedding_dim)
    h = nn.silu(nn.Dense(self.hidden_dim)(emb))
    return nn.Dense(1, kernel_init=nn.initializers.zeros)(h)[:, 0]
