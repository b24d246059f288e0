"""EDM preconditioning (Karras et al. 2022, arXiv 2206.00364, Table 1 / Eq. 7).

D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)).
The coefficients and the skip/out combination are computed in (at least) float32 even for
bfloat16 inputs, as EDM does for its fp16 networks (its Precond classes cast x and sigma to
float32 and only the network's input to the network dtype); D is returned in x's dtype.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp


class EDMCoefficients(NamedTuple):
  c_skip: jnp.ndarray
  c_out: jnp.ndarray
  c_in: jnp.ndarray
  c_noise: jnp.ndarray


def compute_dtype(dtype) -> jnp.dtype:
  """The dtype preconditioning computes in: float32, or float64 for float64 inputs."""
  return jnp.promote_types(dtype, jnp.float32)


def edm_coefficients(sigma, sigma_data: float = 0.5) -> EDMCoefficients:
  """The four EDM preconditioning coefficients at noise level `sigma` (any shape), float32+."""
  sigma = jnp.asarray(sigma)
  sigma = sigma.astype(compute_dtype(sigma.dtype))
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
    sigma = jnp.broadcast_to(jnp.asarray(sigma, compute_dtype(x.dtype)), (x.shape[0],))
    c = edm_coefficients(sigma, sigma_data)
    return edm_output(c, x, raw_fn(edm_input(c, x), c.c_noise, labels))

  return denoise


def edm_input(c: EDMCoefficients, x):
  """The network input c_in x, computed in float32+ and returned in x's dtype."""
  x_hi = x.astype(compute_dtype(x.dtype))
  return (expand_to(c.c_in, x_hi) * x_hi).astype(x.dtype)


def edm_output(c: EDMCoefficients, x, f):
  """D = c_skip x + c_out F, combined in float32+ and returned in x's dtype."""
  x_hi = x.astype(compute_dtype(x.dtype))
  return (expand_to(c.c_skip, x_hi) * x_hi
          + expand_to(c.c_out, x_hi) * f.astype(x_hi.dtype)).astype(x.dtype)
