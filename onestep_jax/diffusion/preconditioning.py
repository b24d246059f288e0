"""EDM preconditioning (Karras et al. 2022, arXiv 2206.00364, Table 1 / Eq. 7).

D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp


class EDMCoefficients(NamedTuple):
  c_skip: jnp.ndarray
  c_out: jnp.ndarray
  c_in: jnp.ndarray
  c_noise: jnp.ndarray


def edm_coefficients(sigma, sigma_data: float = 0.5) -> EDMCoefficients:
  """The four EDM preconditioning coefficients at noise level `sigma` (any shape)."""
  sigma = jnp.asarray(sigma)
  s2 = sigma**2 + sigma_data**2
  return EDMCoefficients(
      c_skip=sigma_data**2 / s2,
      c_out=sigma * sigma_data / jnp.sqrt(s2),
      c_in=1.0 / jnp.sqrt(s2),
      c_noise=jnp.log(sigma) / 4.0,
  )


def expand_to(v, x):
  """Reshape a per-example array `v` of shape [B] (or a scalar) to broadcast against `x`."""
  v = jnp.asarray(v, dtype=x.dtype)
  if v.ndim == 0:
    return v
  if v.shape[0] != x.shape[0] or v.ndim != 1:
    raise ValueError(f'per-example array of shape {v.shape} does not match batch of shape {x.shape}')
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def edm_denoiser(raw_fn: Callable, sigma_data: float = 0.5) -> Callable:
  """Wraps a raw network `raw_fn(x_in, c_noise, labels) -> F` into an EDM denoiser D(x, sigma, labels).

  `sigma` may be a scalar or of shape [B]; `c_noise` is passed to the network with shape [B].
  """

  def denoise(x, sigma, labels: Optional[jnp.ndarray] = None):
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    c = edm_coefficients(sigma, sigma_data)
    f = raw_fn(expand_to(c.c_in, x) * x, c.c_noise, labels)
    return expand_to(c.c_skip, x) * x + expand_to(c.c_out, x) * f.astype(x.dtype)

  return denoise
