"""Autoregressive token models: the baseline and the evaluator of masked diffusion LMs (MDLM,
arXiv 2406.07524; SDTT, arXiv 2410.21035): the next-token loss, exact sequence log-likelihood,
sampling with and without a KV cache, and generative perplexity.

A sequence x_1..x_L is modelled as p(x) = prod_l p(x_l | BOS, x_<l): the network reads the
inputs [BOS, x_1, .., x_{L-1}] and its output at position l - 1 is the distribution of x_l. The
start token BOS is one more id (`bos_index`, the data's vocabulary size), never predicted: like
SUBS's mask token it gets zero probability.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.discrete.losses import token_log_likelihood
from onestep_jax.discrete.process import NEG_INF
from onestep_jax.discrete.sampling import categorical

# logits_fn(inputs [B, T]) -> logits [B, T, V]: a causal network's full forward.
LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]
# step_fn(inputs [B, 1], cache, index) -> (logits [B, 1, V], cache): one cached decoding step.
StepFn = Callable[[jnp.ndarray, Any, jnp.ndarray], tuple[jnp.ndarray, Any]]


def shift_right(tokens: jnp.ndarray, *, bos_index: int) -> jnp.ndarray:
  """Network inputs [BOS, x_1, .., x_{L-1}] of token sequences x [B, L]."""
  bos = jnp.full((tokens.shape[0], 1), bos_index, tokens.dtype)
  return jnp.concatenate([bos, tokens[:, :-1]], axis=1)


def next_token_log_probs(logits: jnp.ndarray, *, bos_index: int) -> jnp.ndarray:
  """log p(next token) [..., V] from logits [..., V], with no mass on the start token."""
  is_bos = jnp.arange(logits.shape[-1]) == bos_index
  return jax.nn.log_softmax(jnp.where(is_bos, NEG_INF, logits.astype(jnp.float32)), axis=-1)


def sequence_log_likelihood(logits_fn: LogitsFn, tokens: jnp.ndarray, *,
                            bos_index: int) -> jnp.ndarray:
  """log p(x) = sum_l log p(x_l | x_<l) [B] of token sequences [B, L], by one causal forward."""
  chex.assert_rank(tokens, 2)
  logits = logits_fn(shift_right(tokens, bos_index=bos_index))
  log_p = next_token_log_probs(logits, bos_index=bos_index)
  return jnp.sum(token_log_likelihood(log_p, tokens), axis=-1)


def next_token_loss(*, logits_fn: LogitsFn, tokens: jnp.ndarray, bos_index: int) -> jnp.ndarray:
  """The maximum-likelihood loss: per-sequence NLL per token [B] (nats), -log p(x) / L."""
  return -sequence_log_likelihood(logits_fn, tokens, bos_index=bos_index) / tokens.shape[1]


def sample(step_fn: StepFn, cache: Any, key: jax.Array, *, num: int, length: int,
           bos_index: int) -> jnp.ndarray:
  """`num` sequences [num, length] int32 drawn token by token with a KV cache: step l feeds the
  previous token at position l and draws x_{l+1} with the key fold_in(key, l), by the precise
  categorical draw of discrete/sampling.py. `cache` is an empty cache for `num` sequences of at
  least `length` positions."""

  def step(carry, i):
    cache, previous = carry
    logits, cache = step_fn(previous[:, None], cache, i)
    token = categorical(jax.random.fold_in(key, i),
                        next_token_log_probs(logits[:, 0], bos_index=bos_index))
    return (cache, token), token

  start = jnp.full((num,), bos_index, jnp.int32)
  _, tokens = jax.lax.scan(step, (cache, start), jnp.arange(length))
  return tokens.T


def sample_uncached(logits_fn: LogitsFn, key: jax.Array, *, num: int, length: int,
                    bos_index: int) -> jnp.ndarray:
  """The reference for `sample`: the same draws with the same keys, each from a full causal
  forward over the whole (partly filled) sequence, L times the work of the cached sampler."""

  def step(i, tokens):
    log_p = next_token_log_probs(logits_fn(shift_right(tokens, bos_index=bos_index))[:, i],
                                 bos_index=bos_index)
    return tokens.at[:, i].set(categorical(jax.random.fold_in(key, i), log_p))

  return jax.lax.fori_loop(0, length, step, jnp.zeros((num, length), jnp.int32))


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """A trained autoregressive model that scores token sequences (the generative-perplexity
  judge of MDLM and SDTT, here of the same size as the diffusion models)."""
  apply_fn: Callable[[Any, jnp.ndarray], jnp.ndarray]  # (params, inputs [B, T]) -> logits
  params: Any
  bos_index: int  # the start token's id = the data's vocabulary size
  length: int  # sequence length it was trained on: the longest it scores
  batch_size: int = 256  # sequences per compiled call

  @functools.cached_property
  def _log_likelihood(self):
    return jax.jit(lambda params, tokens: sequence_log_likelihood(
        lambda x: self.apply_fn(params, x), tokens, bos_index=self.bos_index))

  def log_likelihood(self, tokens: np.ndarray) -> np.ndarray:
    """log p(x) [N] (float64) of token sequences [N, L] with ids in [0, bos_index)."""
    tokens = np.asarray(tokens, np.int32)
    if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.length:
      raise ValueError(f'the evaluator scores token sequences [N, L] with L <= {self.length}, '
                       f'got shape {tokens.shape}')
    if tokens.min() < 0 or tokens.max() >= self.bos_index:
      raise ValueError(f'the evaluator scores ids in [0, {self.bos_index}), got '
                       f'[{tokens.min()}, {tokens.max()}]')
    size = min(self.batch_size, len(tokens))
    padded = np.concatenate([tokens, tokens[:(-len(tokens)) % size]])  # whole batches only
    out = [np.asarray(self._log_likelihood(self.params, padded[i:i + size]), np.float64)
           for i in range(0, len(padded), size)]
    return np.concatenate(out)[:len(tokens)]


def generative_perplexity(evaluator: Evaluator, tokens: np.ndarray) -> float:
  """exp of the evaluator's mean NLL per token of `tokens` [N, L] (MDLM's gen PPL: exp of the
  total NLL over the total number of tokens)."""
  return float(np.exp(-np.sum(evaluator.log_likelihood(tokens)) / np.asarray(tokens).size))
