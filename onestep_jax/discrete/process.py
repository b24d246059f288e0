"""The absorbing-state (masking) forward process and the SUBS parameterisation of masked
diffusion (MDLM, Sahoo et al. 2024, arXiv 2406.07524, Sec. 3.1-3.2)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from onestep_jax.discrete.schedule import LogLinearSchedule

# Log-probability standing for log 0 (MDLM's `neg_infinity`): finite, so 0 * NEG_INF stays 0.
NEG_INF = -1e6


def mask_tokens(key: jax.Array, x0: jnp.ndarray, t: jnp.ndarray, *, mask_index: int,
                schedule: LogLinearSchedule) -> jnp.ndarray:
  """z_t ~ q(z_t | x0): each token of x0 [B, L] independently becomes `mask_index` with
  probability 1 - alpha_t, t [B] (MDLM Eq. 2)."""
  masked = jax.random.uniform(key, x0.shape) < schedule.mask_prob(t)[:, None]
  return jnp.where(masked, mask_index, x0)


def subs_log_probs(logits: jnp.ndarray, tokens: jnp.ndarray, *, mask_index: int) -> jnp.ndarray:
  """SUBS parameterisation (MDLM Sec. 3.2): log x_theta(z_t) [B, L, V] from raw logits.

  Zero masking probabilities: the mask token gets NEG_INF before the log-softmax. Carry-over
  unmasking: at every unmasked position the output is the one-hot of its own token (0 there,
  NEG_INF elsewhere), whatever the network said.
  """
  vocab = logits.shape[-1]
  is_mask_id = jnp.arange(vocab) == mask_index
  log_probs = jax.nn.log_softmax(jnp.where(is_mask_id, logits + NEG_INF, logits), axis=-1)
  own = jnp.where(jax.nn.one_hot(tokens, vocab, dtype=bool), 0.0, NEG_INF)
  return jnp.where((tokens == mask_index)[..., None], log_probs, own)
