"""Score identity Distillation's generator loss (Zhou et al. 2024, arXiv 2404.04057)."""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from onestep_jax.losses.common import (MIN_NORMALIZER, check_generator_inputs, mean_per_example,
                                       noised, noisy_denoisings, sum_per_example)


def sid_generator_loss(*, x_g: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray,
                       teacher_denoiser: Callable, fake_denoiser: Callable, alpha: float = 1.2,
                       normalize: bool = True,
                       labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """SiD's generator loss, per example [B].

  With x_t = x_g + sigma n, y_r = D_teacher(x_t) and y_f = D_fake(x_t) (arXiv 2404.04057,
  Sec. 4, the generator loss with weight alpha),
    loss = sum_dims (y_r - y_f) * ((y_r - x_g) - alpha (y_r - y_f)) / w,
  with w = sg(mean_dims |x_g - y_r|), at least 1e-5, when `normalize` (else w = 1).
  Gradients flow through x_g and through x_t into both denoisers' inputs; the caller keeps the
  denoisers' parameters fixed. At alpha = 1/2 and w = 1 the gradient is half the gradient of the
  model-based Fisher divergence E_{x_t ~ q_theta} ||D_q_theta(x_t) - D_teacher(x_t)||^2
  (tested). SiD's constant loss scale and its noise-level distribution belong to the method.
  """
  check_generator_inputs(x_g, sigma, noise)
  x_t = noised(x_g, sigma, noise)
  y_real, y_fake = noisy_denoisings(x_t=x_t, sigma=sigma, teacher_denoiser=teacher_denoiser,
                                    fake_denoiser=fake_denoiser, labels=labels)
  diff = y_real - y_fake
  loss = sum_per_example(diff * ((y_real - x_g) - alpha * diff))
  if normalize:
    w = jnp.maximum(mean_per_example(jnp.abs(x_g - y_real)), MIN_NORMALIZER)
    loss = loss / jax.lax.stop_gradient(w)
  return loss
