"""The diffusion transformer of masked diffusion language models (MDLM, Sahoo et al. 2024,
arXiv 2406.07524; the backbone SDTT, arXiv 2410.21035, distils), block for block.

Written from the description of kuleshov-group/mdlm `models/dit.py` (class `DIT`): token
embedding; noise conditioning c = silu(MLP(sinusoidal_256(sigma))); blocks of adaLN-modulated
(six chunks: shift, scale, gate for attention, then for the MLP) pre-norm attention with a fused
qkv projection laid out as (three, heads, head_dim) and rotary position embedding in the
rotate-half (GPT-NeoX) convention, and a tanh-GELU MLP; a final adaLN (shift, scale) layer norm
and linear read-out. Layer norms have a weight but no bias. Flax names mirror the PyTorch ones
(`blocks_0/attn_qkv` is `blocks.0.attn_qkv`), so `onestep_jax.convert.mdlm` maps checkpoints one
to one. The conditioning input is optional: without it the network sees sigma = 0, which is what
MDLM feeds a time-independent network.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from onestep_jax.nets.mlp import sinusoidal_embedding

NOISE_EMBEDDING_DIM = 256  # width of the sinusoidal embedding of sigma (MDLM's TimestepEmbedder)
LAYER_NORM_EPS = 1e-5  # PyTorch's layer_norm default
ROTARY_BASE = 10_000.0


def rotary_inv_freq(head_dim: int, base: float = ROTARY_BASE) -> jnp.ndarray:
  """Inverse frequencies base^(-2i/head_dim), i < head_dim/2 (MDLM's `rotary_emb.inv_freq`)."""
  return 1.0 / base**(jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)


def apply_rotary(x: jnp.ndarray, inv_freq: jnp.ndarray,
                 positions: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Rotary position embedding of x [B, L, heads, head_dim], rotate-half convention: the first
  and second halves of each head are the two coordinates of each rotated pair. `positions` [L]
  (default 0 .. L-1) are the positions of the L rows, e.g. offset by a KV cache."""
  if positions is None:
    positions = jnp.arange(x.shape[1])
  angles = positions.astype(jnp.float32)[:, None] * inv_freq[None]  # [L, D/2]
  cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def check_heads(hidden_size: int, n_heads: int) -> None:
  """Rotary attention needs hidden_size to split into heads of even size."""
  if hidden_size % n_heads or (hidden_size // n_heads) % 2:
    raise ValueError(f'hidden_size {hidden_size} must split into {n_heads} heads of even size')


def layer_norm(name: str) -> nn.LayerNorm:
  """MDLM's LayerNorm: a weight, no bias, PyTorch's epsilon."""
  return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_bias=False, use_fast_variance=False, name=name)


# The two helpers below create their layers inside the calling module (call them from a compact
# method), so blocks that share them keep MDLM's flat parameter names.


def rotary_qkv(h: jnp.ndarray, n_heads: int, positions: Optional[jnp.ndarray] = None):
  """Queries, keys (both rotary-embedded at `positions`) and values [B, L, heads, head_dim] of
  h [B, L, dim], from one fused bias-free projection 'attn_qkv' laid out (three, heads,
  head_dim)."""
  dim = h.shape[-1]
  head_dim = dim // n_heads
  qkv = nn.Dense(3 * dim, use_bias=False, name='attn_qkv')(h)
  qkv = qkv.reshape(h.shape[:2] + (3, n_heads, head_dim))
  inv_freq = rotary_inv_freq(head_dim)
  return (apply_rotary(qkv[:, :, 0], inv_freq, positions),
          apply_rotary(qkv[:, :, 1], inv_freq, positions), qkv[:, :, 2])


def feed_forward(h: jnp.ndarray, mlp_ratio: int) -> jnp.ndarray:
  """The block's MLP: 'mlp_0', tanh-GELU, 'mlp_2'."""
  dim = h.shape[-1]
  h = nn.Dense(mlp_ratio * dim, name='mlp_0')(h)
  return nn.Dense(dim, name='mlp_2')(nn.gelu(h, approximate=True))


def _modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
  """adaLN-modulated attention + MLP block (MDLM's DDiTBlock), non-causal."""
  n_heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, c, *, train: bool = False):
    dim = x.shape[-1]
    mods = nn.Dense(6 * dim, kernel_init=nn.initializers.zeros, name='adaLN_modulation')(c)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mods, 6, axis=-1)

    h = _modulate(layer_norm('norm1')(x), shift_msa, scale_msa)
    h = jax.nn.dot_product_attention(*rotary_qkv(h, self.n_heads)).reshape(x.shape)
    h = nn.Dense(dim, use_bias=False, name='attn_out')(h)
    x = x + gate_msa[:, None] * nn.Dropout(self.dropout)(h, deterministic=not train)

    h = feed_forward(_modulate(layer_norm('norm2')(x), shift_mlp, scale_mlp), self.mlp_ratio)
    return x + gate_mlp[:, None] * nn.Dropout(self.dropout)(h, deterministic=not train)


class NoiseEmbedding(nn.Module):
  """c = MLP(sinusoidal_256(sigma)) (MDLM's TimestepEmbedder; the DiT applies silu to it)."""
  cond_dim: int

  @nn.compact
  def __call__(self, sigma):
    h = nn.Dense(self.cond_dim, name='mlp_0')(sinusoidal_embedding(sigma, NOISE_EMBEDDING_DIM))
    return nn.Dense(self.cond_dim, name='mlp_2')(nn.silu(h))


class FinalLayer(nn.Module):
  """adaLN (shift, scale) layer norm and linear read-out to the vocabulary."""
  vocab_size: int

  @nn.compact
  def __call__(self, x, c):
    mods = nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros,
                    name='adaLN_modulation')(c)
    shift, scale = jnp.split(mods, 2, axis=-1)
    x = _modulate(layer_norm('norm_final')(x), shift, scale)
    return nn.Dense(self.vocab_size, kernel_init=nn.initializers.zeros, name='linear')(x)


class DiT(nn.Module):
  """MDLM's DIT backbone: tokens [B, L] int, sigma [B] (optional) -> logits [B, L, vocab_size].

  `vocab_size` counts the mask token (MDLM appends it as the last id when the tokenizer has none).
  """
  vocab_size: int  # number of token ids, mask token included
  hidden_size: int = 768  # model width (MDLM small: 768)
  cond_dim: int = 128  # width of the noise conditioning c
  n_heads: int = 12  # attention heads; hidden_size / n_heads must be even
  n_blocks: int = 12  # transformer blocks
  mlp_ratio: int = 4  # MLP hidden width / hidden_size
  dropout: float = 0.0  # dropout on the attention and MLP outputs in training (MDLM uses 0.1)

  @nn.compact
  def __call__(self, tokens, sigma: Optional[jnp.ndarray] = None, *, train: bool = False):
    if tokens.ndim != 2:
      raise ValueError(f'DiT expects tokens of shape [B, L], got {tokens.shape}')
    check_heads(self.hidden_size, self.n_heads)
    if sigma is None:
      sigma = jnp.zeros((tokens.shape[0],), jnp.float32)
    x = nn.Embed(self.vocab_size, self.hidden_size, name='vocab_embed')(tokens)
    c = nn.silu(NoiseEmbedding(self.cond_dim, name='sigma_map')(jnp.reshape(sigma, (-1,))))
    for i in range(self.n_blocks):
      x = DiTBlock(self.n_heads, self.mlp_ratio, self.dropout, name=f'blocks_{i}')(
          x, c, train=train)
    return FinalLayer(self.vocab_size, name='output_layer')(x, c)
