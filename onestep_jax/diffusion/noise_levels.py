"""Noise levels: the EDM sampling discretisation and training-time noise/time proposals."""
from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.diffusion.schedules import TrigFlowSchedule

Shape = Union[int, Sequence[int]]


def _shape(shape: Shape) -> tuple:
  return (shape,) if isinstance(shape, int) else tuple(shape)


def karras_sigmas(num_steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  rho: float = 7.0, dtype=jnp.float32) -> jnp.ndarray:
  """EDM's rho-spaced noise levels with a final zero, shape [num_steps + 1].

  sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for
  i < N and sigma_N = 0 (arXiv 2206.00364, Eq. 5). num_steps = 1 gives [sigma_max, 0].
  The arguments are Python numbers: the levels are computed once, in float64, and cast to `dtype`.
  """
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f'num_steps must be a positive int, got {num_steps!r}')
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f'need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, '
                     f'sigma_max={sigma_max}')
  if rho <= 0:
    raise ValueError(f'rho must be positive, got {rho}')
  ramp = np.linspace(0.0, 1.0, num_steps)  # float64 on the host, like EDM, then cast
  lo, hi = sigma_min**(1.0 / rho), sigma_max**(1.0 / rho)
  sigmas = (hi + ramp * (lo - hi))**rho
  return jnp.asarray(np.append(sigmas, 0.0), dtype)


def sample_log_normal_sigma(key: jax.Array, shape: Shape, *, p_mean: float = -1.2,
                            p_std: float = 1.2, dtype=jnp.float32) -> jnp.ndarray:
  """EDM training noise levels, ln sigma ~ N(p_mean, p_std^2) (arXiv 2206.00364, Table 1)."""
  return jnp.exp(p_mean + p_std * jax.random.normal(key, _shape(shape), dtype))


def check_index_range(index_range, num_levels: int, *, name: str) -> tuple[int, int]:
  """(lo, hi) of a pair with 0 <= lo < hi <= num_levels; otherwise a ValueError naming `name`."""
  index_range = tuple(index_range)
  if not (len(index_range) == 2 and 0 <= index_range[0] < index_range[1] <= num_levels):
    raise ValueError(f'{name} must be (lo, hi) with 0 <= lo < hi <= {num_levels}, got '
                     f'{index_range}')
  return int(index_range[0]), int(index_range[1])


def sample_karras_index_sigma(key: jax.Array, shape: Shape, *, num_levels: int = 1000,
                              min_index: int = 0, max_index: int | None = None,
                              sigma_min: float = 0.002, sigma_max: float = 80.0,
                              rho: float = 7.0, dtype=jnp.float32) -> jnp.ndarray:
  """sigma = grid[i], i ~ U{min_index, ..., max_index - 1}, on an ascending rho-spaced grid.

  grid[0] = sigma_min and grid[num_levels - 1] = sigma_max (the Karras levels without the zero,
  smallest first, as in DMD2 (arXiv 2405.14867), which draws i in [20, 980) of 1000).
  """
  min_index, max_index = check_index_range(
      (min_index, num_levels if max_index is None else max_index), num_levels,
      name='(min_index, max_index)')
  grid = karras_sigmas(num_levels, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                       dtype=dtype)[-2::-1]
  return grid[jax.random.randint(key, _shape(shape), min_index, max_index)]


def sample_logit_normal_time(key: jax.Array, shape: Shape, *, mean: float = 0.0,
                             std: float = 1.0, dtype=jnp.float32) -> jnp.ndarray:
  """Flow-matching times t = sigmoid(u), u ~ N(mean, std^2) (SD3, arXiv 2403.03206, Sec. 3.1)."""
  return jax.nn.sigmoid(mean + std * jax.random.normal(key, _shape(shape), dtype))


def sample_trigflow_time(key: jax.Array, shape: Shape, *, p_mean: float = -1.0,
                         p_std: float = 1.6, sigma_data: float = 0.5,
                         dtype=jnp.float32) -> jnp.ndarray:
  """sCM time proposal tan t = exp(tau) / sigma_d, tau ~ N(p_mean, p_std^2) (arXiv 2410.11081)."""
  sigma = sample_log_normal_sigma(key, shape, p_mean=p_mean, p_std=p_std, dtype=dtype)
  return TrigFlowSchedule(sigma_data=sigma_data).time_from_edm_sigma(sigma)
