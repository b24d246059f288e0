"""PF-ODE / SDE samplers for an EDM denoiser D(x, sigma, labels) (arXiv 2206.00364, Alg. 1-2).

All samplers integrate dx/dsigma = (x - D(x, sigma)) / sigma over a decreasing 1-D array `sigmas`
(e.g. `karras_sigmas(N)`, where only the last entry may be 0) starting from `x_init` at noise level
sigmas[0] (e.g. sigmas[0] * N(0, I)). They loop with `lax.scan`, so they are jittable and trace the
denoiser once whatever the number of steps. Internally they run in `dtype` (EDM uses float64,
which needs `jax.enable_x64`); the denoiser receives arrays of that dtype and a per-example sigma
of shape [B]. They return the final sample in x_init's dtype and, with `return_trajectory=True`,
also every state x_0 (= x_init), ..., x_N stacked as [N + 1, *x_init.shape].
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp


def _check(x_init, sigmas, dtype):
  if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
    raise ValueError(f'dtype must be a floating dtype, got {dtype}')
  if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
    raise ValueError('dtype float64 needs 64-bit JAX: wrap the call in '
                     '`with jax.enable_x64(True):` or set JAX_ENABLE_X64=1')
  sigmas = jnp.asarray(sigmas, dtype)
  if sigmas.ndim != 1 or sigmas.shape[0] < 2:
    raise ValueError(f'sigmas must be a 1-D array of at least 2 noise levels, got shape '
                     f'{sigmas.shape}')
  if jnp.ndim(x_init) < 1:
    raise ValueError(f'x_init must have a leading batch axis, got shape {jnp.shape(x_init)}')
  return jnp.asarray(x_init).astype(dtype), sigmas


def _slope(denoiser, x, sigma, labels):
  """d = (x - D(x, sigma)) / sigma, the PF-ODE drift in sigma (arXiv 2206.00364, Eq. 3)."""
  denoised = denoiser(x, jnp.full((x.shape[0],), sigma, x.dtype), labels).astype(x.dtype)
  return (x - denoised) / sigma


def _integrate(step: Callable, x_init, sigmas, keys, return_trajectory: bool, out_dtype):
  """Scans `step(x, sigma, sigma_next, key) -> x_next` over consecutive noise levels."""

  def body(x, inputs):
    x_next = step(x, *inputs)
    return x_next, (x_next if return_trajectory else None)

  x, states = jax.lax.scan(body, x_init, (sigmas[:-1], sigmas[1:], keys))
  if not return_trajectory:
    return x.astype(out_dtype)
  trajectory = jnp.concatenate([x_init[None], states], axis=0)
  return x.astype(out_dtype), trajectory.astype(out_dtype)


def _heun_update(denoiser, x_hat, sigma_hat, sigma_next, labels):
  """EDM step from (x_hat, sigma_hat): Euler, then the 2nd-order correction if sigma_next > 0."""
  d = _slope(denoiser, x_hat, sigma_hat, labels)
  x_euler = x_hat + (sigma_next - sigma_hat) * d

  def corrected():
    d_next = _slope(denoiser, x_euler, sigma_next, labels)
    return x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)

  return jax.lax.cond(sigma_next > 0, corrected, lambda: x_euler)


def euler_sampler(denoiser: Callable, x_init, *, sigmas, labels=None,
                  return_trajectory: bool = False, dtype=jnp.float32):
  """First-order Euler PF-ODE solver; NFE = N = len(sigmas) - 1."""
  out_dtype = jnp.asarray(x_init).dtype
  x, sigmas = _check(x_init, sigmas, dtype)

  def step(x, sigma, sigma_next, _):
    return x + (sigma_next - sigma) * _slope(denoiser, x, sigma, labels)

  return _integrate(step, x, sigmas, None, return_trajectory, out_dtype)


def heun_sampler(denoiser: Callable, x_init, *, sigmas, labels=None,
                 return_trajectory: bool = False, dtype=jnp.float32):
  """EDM's deterministic 2nd-order Heun sampler (arXiv 2206.00364, Alg. 1).

  No correction on a step that ends at sigma = 0, so NFE = 2N - 1 with `karras_sigmas(N)`.
  """
  out_dtype = jnp.asarray(x_init).dtype
  x, sigmas = _check(x_init, sigmas, dtype)

  def step(x, sigma, sigma_next, _):
    return _heun_update(denoiser, x, sigma, sigma_next, labels)

  return _integrate(step, x, sigmas, None, return_trajectory, out_dtype)


def stochastic_sampler(denoiser: Callable, x_init, *, sigmas, key: jax.Array, labels=None,
                       s_churn: float = 0.0, s_min: float = 0.0, s_max: float = float('inf'),
                       s_noise: float = 1.0, return_trajectory: bool = False,
                       dtype=jnp.float32):
  """EDM's stochastic sampler (arXiv 2206.00364, Alg. 2; NVlabs/edm `edm_sampler`).

  Before step i, if s_min <= sigma_i <= s_max, the noise level is raised to
  sigma_hat = (1 + gamma) sigma_i with gamma = min(s_churn / N, sqrt(2) - 1) by adding fresh
  noise of std sqrt(sigma_hat^2 - sigma_i^2) s_noise; then one Heun step runs from sigma_hat.
  With s_churn = 0 this is `heun_sampler`. NFE = 2N - 1 with `karras_sigmas(N)`.
  """
  out_dtype = jnp.asarray(x_init).dtype
  x, sigmas = _check(x_init, sigmas, dtype)
  num_steps = sigmas.shape[0] - 1
  gamma_max = jnp.minimum(s_churn / num_steps, math.sqrt(2.0) - 1.0)

  def step(x, sigma, sigma_next, step_key):
    gamma = jnp.where((sigma >= s_min) & (sigma <= s_max), gamma_max, 0.0).astype(x.dtype)
    sigma_hat = sigma * (1.0 + gamma)
    noise = jax.random.normal(step_key, x.shape, x.dtype)
    # sqrt(sigma_hat^2 - sigma^2), written so that it cannot go negative under FMA rounding.
    x_hat = x + sigma * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * noise
    return _heun_update(denoiser, x_hat, sigma_hat, sigma_next, labels)

  keys = jax.random.split(key, num_steps)
  return _integrate(step, x, sigmas, keys, return_trajectory, out_dtype)


SAMPLERS = {
    'euler': euler_sampler,
    'heun': heun_sampler,
    'stochastic': stochastic_sampler,
}

_SECOND_ORDER = ('heun', 'stochastic')


def nfe(sampler, num_steps: int, *, ends_at_zero: bool = True) -> int:
  """Denoiser evaluations of `sampler` (a name in SAMPLERS or one of its functions) for N steps.

  Euler: N. Heun / stochastic: 2N - 1 when the last noise level is 0 (as `karras_sigmas`), else 2N.
  """
  names = {fn: name for name, fn in SAMPLERS.items()}
  name = names.get(sampler, sampler)
  if not isinstance(name, str) or name not in SAMPLERS:
    raise ValueError(f'unknown sampler {sampler!r}; valid choices: {sorted(SAMPLERS)}')
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f'num_steps must be a positive int, got {num_steps!r}')
  if name in _SECOND_ORDER:
    return 2 * num_steps - (1 if ends_at_zero else 0)
  return num_steps
