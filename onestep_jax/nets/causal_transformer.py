"""A causal (decoder-only) transformer: the autoregressive baseline and evaluator of the masked
diffusion LMs (MDLM arXiv 2406.07524 and SDTT arXiv 2410.21035 compare against one).

Its blocks are the DiT's (nets/dit.py: rotary attention with a fused qkv projection, bias-free
layer norms, tanh-GELU MLP) without the adaLN time conditioning: pre-norm residual attention and
MLP, causal attention, a final layer norm and linear read-out. Incremental decoding keeps the
keys and values of every block in fixed-size arrays (`init_cache`), so a jitted loop over
positions (lax.scan) decodes one token per network call without host round-trips.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from onestep_jax.nets.dit import check_heads, feed_forward, layer_norm, rotary_qkv

# Per block, (keys, values) [B, max_length, heads, head_dim] of the positions decoded so far.
KVCache = tuple[tuple[jnp.ndarray, jnp.ndarray], ...]


class CausalBlock(nn.Module):
  """Pre-norm causal rotary attention + MLP block."""
  n_heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, positions, cache=None, *, train: bool = False):
    """x [B, T, dim] at consecutive `positions` [T]. Without `cache`, row t attends to rows <= t.
    With `cache` (keys, values) [B, S, heads, head_dim], this call's keys and values are written
    at `positions` and row t attends to the cache slots <= positions[t]; returns (x, new cache)."""
    h = layer_norm('norm1')(x)
    q, k, v = rotary_qkv(h, self.n_heads, positions)
    if cache is None:
      h = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    else:
      start = (0, positions[0], 0, 0)
      k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start)
      v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start)
      visible = jnp.arange(k.shape[1])[None, :] <= positions[:, None]  # [T, S]
      h = jax.nn.dot_product_attention(q, k, v, mask=visible[None, None])
    h = nn.Dense(x.shape[-1], use_bias=False, name='attn_out')(h.reshape(x.shape))
    x = x + nn.Dropout(self.dropout)(h, deterministic=not train)
    h = feed_forward(layer_norm('norm2')(x), self.mlp_ratio)
    x = x + nn.Dropout(self.dropout)(h, deterministic=not train)
    return x if cache is None else (x, (k, v))


class CausalTransformer(nn.Module):
  """tokens [B, T] int -> next-token logits [B, T, vocab_size]; logits[:, t] depend only on
  tokens[:, :t + 1].

  With `cache` (from `init_cache`), the tokens sit at positions index .. index + T - 1 after the
  cached ones and the call returns (logits, updated cache).
  """
  vocab_size: int  # number of token ids, the start (BOS) token included
  hidden_size: int = 768  # model width
  n_heads: int = 12  # attention heads; hidden_size / n_heads must be even
  n_blocks: int = 12  # transformer blocks
  mlp_ratio: int = 4  # MLP hidden width / hidden_size
  dropout: float = 0.0  # dropout on the attention and MLP outputs in training

  @nn.compact
  def __call__(self, tokens, *, cache: Optional[KVCache] = None, index=0,
               train: bool = False):
    if tokens.ndim != 2:
      raise ValueError(f'CausalTransformer expects tokens of shape [B, T], got {tokens.shape}')
    check_heads(self.hidden_size, self.n_heads)
    positions = index + jnp.arange(tokens.shape[1])
    x = nn.Embed(self.vocab_size, self.hidden_size, name='vocab_embed')(tokens)
    new_cache = []
    for i in range(self.n_blocks):
      block = CausalBlock(self.n_heads, self.mlp_ratio, self.dropout, name=f'blocks_{i}')
      if cache is None:
        x = block(x, positions, train=train)
      else:
        x, block_cache = block(x, positions, cache[i], train=train)
        new_cache.append(block_cache)
    x = layer_norm('norm_final')(x)
    logits = nn.Dense(self.vocab_size, kernel_init=nn.initializers.zeros, name='linear')(x)
    return logits if cache is None else (logits, tuple(new_cache))


def init_cache(module: CausalTransformer, batch: int, max_length: int,
               dtype=jnp.float32) -> KVCache:
  """An empty KV cache for decoding up to `max_length` positions of `batch` sequences."""
  shape = (batch, max_length, module.n_heads, module.hidden_size // module.n_heads)
  return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
               for _ in range(module.n_blocks))
