"""Noise schedule of masked diffusion: the log-linear schedule (MDLM, arXiv 2406.07524, Sec. 3;
kuleshov-group/mdlm `noise_schedule.py`) and the training-time sampler of t."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LogLinearSchedule:
  """alpha_t = 1 - (1 - eps) t: a token is masked at time t with probability (1 - eps) t.

  The total noise sigma(t) = -log(alpha_t) is what MDLM conditions its network on.
  """
  eps: float = 1e-3  # alpha_1 = eps: at t = 1 a token survives with probability eps

  def alpha(self, t):
    """Probability alpha_t that a token is still unmasked at time t."""
    return 1.0 - (1.0 - self.eps) * jnp.asarray(t, jnp.float32)

  def mask_prob(self, t):
    """1 - alpha_t, the probability that a token is masked at time t."""
    return (1.0 - self.eps) * jnp.asarray(t, jnp.float32)

  def sigma(self, t):
    """Total noise sigma(t) = -log(alpha_t) = -log1p(-(1 - eps) t)."""
    return -jnp.log1p(-self.mask_prob(t))

  def nelbo_weight(self, t):
    """-alpha'_t / (1 - alpha_t), the weight of the continuous-time NELBO (MDLM Eq. 10); equal
    to 1 / t for this schedule."""
    return 1.0 / jnp.asarray(t, jnp.float32)


def sample_time(key: jax.Array, num: int, *, t_min: float = 1e-3,
                antithetic: bool = True) -> jnp.ndarray:
  """Times t in [t_min, 1) for a batch of `num`: uniform, or low-discrepancy (antithetic) as in
  MDLM: u_i = (u / num + i / num) mod 1, one stratum per example."""
  u = jax.random.uniform(key, (num,))
  if antithetic:
    u = jnp.mod(u / num + jnp.arange(num) / num, 1.0)
  return (1.0 - t_min) * u + t_min
