"""Teacher-training losses: EDM denoising score matching and flow matching."""
from __future__ import annotations

from typing import Callable, Optional

import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.losses.common import sum_per_example as _sum_per_example


def edm_loss_weight(sigma, sigma_data: float = 0.5):
  """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM, arXiv 2206.00364, Eq. 8)."""
  return (sigma**2 + sigma_data**2) / (sigma * sigma_data)**2


def edm_denoising_loss(*, denoiser: Callable, x0: jnp.ndarray, sigma: jnp.ndarray,
                       noise: jnp.ndarray, labels: Optional[jnp.ndarray] = None,
                       sigma_data: float = 0.5) -> jnp.ndarray:
  """lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2 summed over the data dimensions, shape [B].

  EDM's training objective (arXiv 2206.00364, Eq. 2 with the weighting of Eq. 8); the same loss on
  stop-gradient generator samples trains the fake score of Diff-Instruct / SiD / DMD.
  `sigma` has shape [B] (draw it with an EDM log-normal); `noise` is standard normal like x0.
  """
  x_t = x0 + expand_to(sigma, x0) * noise
  err = denoiser(x_t, sigma, labels) - x0
  return edm_loss_weight(sigma, sigma_data) * _sum_per_example(err**2)


def flow_matching_loss(*, velocity_fn: Callable, x0: jnp.ndarray, t: jnp.ndarray,
                       noise: jnp.ndarray, labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """||v(x_t, t) - (noise - x0)||^2 summed over data dimensions, shape [B].

  Rectified flow / conditional flow matching (Liu et al. 2022; Lipman et al. 2022):
  x_t = (1 - t) x0 + t noise, target velocity noise - x0; `t` in (0, 1) has shape [B].
  """
  tt = expand_to(t, x0)
  x_t = (1 - tt) * x0 + tt * noise
  err = velocity_fn(x_t, t, labels) - (noise - x0)
  return _sum_per_example(err**2)
