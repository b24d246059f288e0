"""Score Implicit Matching's generator loss (Luo et al. 2024, arXiv 2410.16794)."""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from onestep_jax.losses.common import (check_generator_inputs, default_pseudo_huber_c, noised,
                                       noisy_denoisings, sum_per_example)

_DISTANCES = ('l2', 'pseudo_huber')


def sim_generator_loss(*, x_g: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray,
                       teacher_denoiser: Callable, fake_denoiser: Callable,
                       distance: str = 'pseudo_huber', c: Optional[float] = None,
                       labels: Optional[jnp.ndarray] = None,
                       detach_direction: bool = False) -> jnp.ndarray:
  """SIM surrogate whose gradient is the gradient of a score-based divergence, per example [B].

  The score-gradient theorem of arXiv 2410.16794 (Sec. 3.2), written in denoiser units: with
  x_t = x_g + sigma n and u(x) = D_fake(x) - D_teacher(x),
    loss = -d'(u(x_t)) . (D_fake(x_t) - x_g),
  and gradients flowing through x_g and through x_t into both denoisers' inputs (the caller keeps
  their parameters fixed). If D_fake is the exact denoiser of the generator's noisy marginal
  q_theta, its gradient in expectation equals the gradient of
    E_{x_t ~ sg(q_theta)} d(D_q_theta(x_t) - D_teacher(x_t))
  (samples frozen; tested on Gaussians). This follows from score units because
  s_fake - grad log q(x_t | x_g) = (D_fake - x_g) / sigma^2 and s_teacher - s_fake = -u / sigma^2:
  rescaling the score-unit distance by sigma^4 gives the form above.

  Distances d on the per-example difference u (Sec. 3.3 of the paper):
    'l2':            d(u) = ||u||^2,                 d'(u) = 2u;
    'pseudo_huber':  d(u) = sqrt(||u||^2 + c^2) - c, d'(u) = u / sqrt(||u||^2 + c^2).
  With 'l2' the loss equals exactly twice SiD's loss at alpha = 1 without normalisation.
  c defaults to 0.00054 sqrt(d) for d data dimensions (the pseudo-Huber rule of arXiv 2310.14189;
  the constant used in the SIM paper was not confirmed here). No noise-level weighting is applied:
  it belongs to the method, as do the noise-level distribution and any loss scale.

  `detach_direction=True` stops the gradient through d'(u) (cheaper: no backpropagation through
  the teacher). The identity above then holds only for parameters that shift samples uniformly
  (e.g. a mean), not in general (e.g. a scale); see the tests.
  """
  if distance not in _DISTANCES:
    raise ValueError(f'unknown distance {distance!r}; choose one of {_DISTANCES}')
  check_generator_inputs(x_g, sigma, noise)
  x_t = noised(x_g, sigma, noise)
  y_real, y_fake = noisy_denoisings(x_t=x_t, sigma=sigma, teacher_denoiser=teacher_denoiser,
                                    fake_denoiser=fake_denoiser, labels=labels)
  u = y_fake - y_real
  if distance == 'l2':
    direction = 2.0 * u
  else:
    c = default_pseudo_huber_c(x_g) if c is None else c
    norm = jnp.sqrt(sum_per_example(u**2) + c**2)
    direction = u / norm.reshape((-1,) + (1,) * (x_g.ndim - 1))
  if detach_direction:
    direction = jax.lax.stop_gradient(direction)
  return -sum_per_example(direction * (y_fake - x_g))
