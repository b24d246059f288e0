"""The training loss of masked diffusion: the continuous-time NELBO (MDLM, Sahoo et al. 2024,
arXiv 2406.07524, Eq. 10-11)."""
from __future__ import annotations

import chex
import jax.numpy as jnp

from onestep_jax.discrete.sampling import LogProbsFn
from onestep_jax.discrete.schedule import LogLinearSchedule


def token_log_likelihood(log_probs: jnp.ndarray, tokens: jnp.ndarray) -> jnp.ndarray:
  """log_probs[b, l, tokens[b, l]]: [B, L, V] and [B, L] -> [B, L]."""
  return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


def nelbo_loss(*, log_probs_fn: LogProbsFn, x0: jnp.ndarray, z_t: jnp.ndarray, t: jnp.ndarray,
               mask_index: int, schedule: LogLinearSchedule) -> jnp.ndarray:
  """Per-sequence NELBO integrand [B] at (t, z_t ~ q(z_t | x0)), in nats:

    -alpha'_t / (1 - alpha_t) * sum over masked positions l of -log x_theta(z_t)_l[x0_l],

  whose expectation over t ~ U[0, 1] and z_t bounds -log p_theta(x0) (the SUBS network is called
  as `log_probs_fn(z_t, sigma(t))`). Unmasked positions contribute nothing (carry-over).
  """
  chex.assert_rank([x0, z_t, t], [2, 2, 1])
  chex.assert_equal_shape([x0, z_t])
  log_p = token_log_likelihood(log_probs_fn(z_t, schedule.sigma(t)), x0)
  masked = z_t == mask_index
  return schedule.nelbo_weight(t) * jnp.sum(jnp.where(masked, -log_p, 0.0), axis=-1)
