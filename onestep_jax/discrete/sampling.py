"""Sampling masked diffusion: precise categorical draws, the ancestral step and the N-step
ancestral sampler with MDLM's cache (Sahoo et al. 2024, arXiv 2406.07524, Sec. 3.3 / App. B).

A network is used through `log_probs_fn(tokens [B, L], sigma [B]) -> SUBS log x_theta [B, L, V]`.
"""
from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from onestep_jax.discrete.process import NEG_INF
from onestep_jax.discrete.schedule import LogLinearSchedule

LogProbsFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
T_MIN = 1e-5  # last time of the sampling grid 1 -> T_MIN (MDLM's sampling eps)
_LARGEST_BELOW_ONE = 1.0 - 2.0**-24  # largest float32 below 1


def uniform_from_bits(hi: jnp.ndarray, lo: jnp.ndarray) -> jnp.ndarray:
  """U = (hi + (lo + 1/2) 2^-32) 2^-32 in (0, 1) from two uint32 words, float32.

  U lies on a grid of step 2^-64, so U is never 0 and, near 0, keeps float32's relative precision
  down to 2^-65 (a float64 uniform on the usual 2^-53 grid stops at 1e-16, a float32 one at 6e-8).
  """
  u = (hi.astype(jnp.float32) + (lo.astype(jnp.float32) + 0.5) * 2.0**-32) * 2.0**-32
  return jnp.minimum(u, _LARGEST_BELOW_ONE)  # hi close to 2^32 rounds up to 1 in float32


def exponential_variates(key: jax.Array, shape) -> jnp.ndarray:
  """Exp(1) variates E = -log(1 - U) from 64 random bits each, accurate to float32 relative
  precision for every E down to 2.7e-20 (the tail that decides a Gumbel-max draw)."""
  hi, lo = jax.random.bits(key, (2, *shape), jnp.uint32)
  return -jnp.log1p(-uniform_from_bits(hi, lo))


def categorical(key: jax.Array, log_probs: jnp.ndarray) -> jnp.ndarray:
  """One draw per row from softmax(log_probs) over the last axis, as int32.

  Gumbel-max written as an exponential race: argmax_i log p_i - log E_i. Low-precision Gumbel
  noise lowers the effective temperature of masked-diffusion samplers (Zheng et al. 2024,
  arXiv 2409.02908), and the fix in PyTorch code is float64. JAX runs with x64 disabled and its
  scoped `jax.enable_x64` does not compose with `jit` (in jax 0.10 random bits and argmax fail to
  trace inside it),
  so the precision is put where the error came from: the Gumbel noise -log E is computed from
  64 random bits with full relative precision of E (see `exponential_variates`), i.e. a Gumbel
  tail up to 45 where a float32 uniform stops at 16.6 and a float64 one at 36.7. The remaining
  float32 rounding of log p_i - log E_i (at most ~4e-6 absolute) moves probabilities by ~1e-6
  relative.
  """
  e = exponential_variates(key, log_probs.shape)
  return jnp.argmax(log_probs.astype(jnp.float32) - jnp.log(e), axis=-1).astype(jnp.int32)


def _log_coefficient(c):
  return jnp.where(c > 0, jnp.log(jnp.maximum(c, 1e-30)), NEG_INF)


def step_log_probs(log_x0: jnp.ndarray, z_t: jnp.ndarray, t, s, *, mask_index: int,
                   schedule: LogLinearSchedule) -> jnp.ndarray:
  """log p_theta(z_s | z_t) [B, L, V] of one ancestral step from t to s < t (MDLM Eq. 7).

  A masked position becomes token v with probability x_theta(v) (alpha_s - alpha_t) /
  (1 - alpha_t) and stays masked with probability (1 - alpha_s) / (1 - alpha_t); an unmasked
  position keeps its token. `log_x0` are SUBS log-probabilities (no mass on the mask token).
  """
  chex.assert_rank([log_x0, z_t], [3, 2])
  batch = z_t.shape[0]
  a_t = jnp.broadcast_to(schedule.alpha(t), (batch,))[:, None, None]
  a_s = jnp.broadcast_to(schedule.alpha(s), (batch,))[:, None, None]
  vocab = log_x0.shape[-1]
  is_mask_id = jnp.arange(vocab) == mask_index
  masked = jnp.where(is_mask_id, _log_coefficient((1 - a_s) / (1 - a_t)),
                     log_x0 + _log_coefficient((a_s - a_t) / (1 - a_t)))
  own = jnp.where(jax.nn.one_hot(z_t, vocab, dtype=bool), 0.0, NEG_INF)
  return jnp.where((z_t == mask_index)[..., None], masked, own)


def ancestral_step(key: jax.Array, log_x0: jnp.ndarray, z_t: jnp.ndarray, t, s, *,
                   mask_index: int, schedule: LogLinearSchedule) -> jnp.ndarray:
  """z_s ~ p_theta(z_s | z_t); unmasked tokens are carried over unchanged."""
  z_s = categorical(key, step_log_probs(log_x0, z_t, t, s, mask_index=mask_index,
                                        schedule=schedule))
  return jnp.where(z_t == mask_index, z_s, z_t)


def ancestral_sample(log_probs_fn: LogProbsFn, key: jax.Array, *, num: int, length: int,
                     num_steps: int, mask_index: int, schedule: LogLinearSchedule,
                     t_min: float = T_MIN, cache=False) -> tuple[jnp.ndarray, jnp.ndarray]:
  """`num` sequences of `length` tokens by `num_steps` ancestral steps on the grid
  t = linspace(1, t_min, num_steps + 1), from all-mask, then MDLM's noise removal: tokens still
  masked at t_min take the argmax of x_theta. Returns (tokens [num, length] int32, the number of
  network evaluations).

  With `cache=True` (a Python or traced bool) the network is not evaluated again after a step
  that changed no token of the batch: its last output is reused (MDLM's `ddpm_cache`), so at
  most min(num_steps, num * length) + 1 evaluations are made. That is exact only for a network
  that ignores sigma (time-independent, MDLM's default); step k uses the key `fold_in(key, k)`
  either way, so for such a network the cached and uncached samplers return the same tokens.
  """
  ts = jnp.linspace(1.0, t_min, num_steps + 1)
  z = jnp.full((num, length), mask_index, jnp.int32)
  sigma = lambda t: jnp.full((num,), schedule.sigma(t), jnp.float32)
  out_shape = jax.eval_shape(log_probs_fn, z, sigma(1.0))

  def log_x0(z, valid, cached, t):
    # Under vmap a batched predicate turns cond into select, which evaluates both branches:
    # correct, but the cache saves nothing there.
    fresh = jax.lax.cond(valid, lambda: cached, lambda: log_probs_fn(z, sigma(t)))
    return fresh, jnp.logical_not(valid).astype(jnp.int32)

  def step(carry, i):
    z, valid, cached, nfe = carry
    lp, calls = log_x0(z, valid, cached, ts[i])
    z_next = ancestral_step(jax.random.fold_in(key, i), lp, z, ts[i], ts[i + 1],
                            mask_index=mask_index, schedule=schedule)
    valid = jnp.logical_and(cache, jnp.all(z_next == z))
    return (z_next, valid, lp, nfe + calls), None

  init = (z, jnp.array(False), jnp.zeros(out_shape.shape, out_shape.dtype), jnp.int32(0))
  (z, valid, cached, nfe), _ = jax.lax.scan(step, init, jnp.arange(num_steps))
  lp, calls = log_x0(z, valid, cached, ts[-1])
  return jnp.argmax(lp, axis=-1).astype(jnp.int32), nfe + calls
