"""Distribution Matching Distillation: the generator's distribution-matching and regression losses.

DMD (Yin et al. 2023, arXiv 2311.18828, Eqs. 7-8 and the regression loss of Sec. 3.3) and DMD2
(Yin et al. 2024, arXiv 2405.14867), under variance-exploding noising x_t = x_g + sigma n.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from onestep_jax.losses.common import (MIN_NORMALIZER, check_generator_inputs,
                                       distance_per_example, inject_gradient, mean_per_example,
                                       noised, noisy_denoisings)


def dmd_generator_loss(*, x_g: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray,
                       teacher_denoiser: Callable, fake_denoiser: Callable,
                       labels: Optional[jnp.ndarray] = None, normalize: bool = True) -> jnp.ndarray:
  """Distribution-matching surrogate of DMD, per example [B].

  With x_t = sg(x_g) + sigma n, the approximate reverse-KL gradient of arXiv 2311.18828, Eq. 7
  in denoiser units is g = (D_fake(x_t) - D_teacher(x_t)) / w, where (Eq. 8)
  w = mean over the data dimensions of |x_g - D_teacher(x_t)| (stop-gradient, at least 1e-5).
  The loss 0.5 ||x_g - sg(x_g - g)||^2 has d loss / d x_g = g exactly; nothing flows into either
  denoiser (both are evaluated under stop-gradient). Its value 0.5 ||g||^2 is not a divergence.

  Args:
    x_g: generator samples [B, ...].
    sigma: noise level per example [B].
    noise: standard normal noise, shaped like x_g.
    teacher_denoiser, fake_denoiser: callables D(x, sigma, labels) -> shaped like x.
    labels: passed to both denoisers unchanged.
    normalize: divide by w (DMD); False gives g = D_fake - D_teacher, the Diff-Instruct gradient
      (arXiv 2305.18455, Eq. 3.4, with weight sigma^2).
  """
  check_generator_inputs(x_g, sigma, noise)
  x_t = noised(jax.lax.stop_gradient(x_g), sigma, noise)
  y_real, y_fake = noisy_denoisings(x_t=x_t, sigma=sigma, teacher_denoiser=teacher_denoiser,
                                    fake_denoiser=fake_denoiser, labels=labels)
  grad = y_fake - y_real
  if normalize:
    w = jnp.maximum(mean_per_example(jnp.abs(x_g - y_real)), MIN_NORMALIZER)
    grad = grad / w.reshape((-1,) + (1,) * (x_g.ndim - 1))
  return inject_gradient(x_g, jax.lax.stop_gradient(grad))


def regression_loss(*, x_g: jnp.ndarray, target: jnp.ndarray, distance: str = 'l2',
                    c: Optional[float] = None) -> jnp.ndarray:
  """Distance between generator outputs and paired teacher ODE outputs, per example [B].

  DMD's regression loss (arXiv 2311.18828, Sec. 3.3) pairs each noise z with the image the
  teacher's ODE sampler produces from it and penalises d(G(z), y). The paper uses LPIPS, which
  needs a pretrained network that is not available here, so this offers
    'l2':            ||x_g - target||^2,
    'pseudo_huber':  sqrt(||x_g - target||^2 + c^2) - c,
  with c = 0.00054 sqrt(d) for d data dimensions by default (the rule of arXiv 2310.14189).
  `target` is used as given (no stop-gradient is applied to it).
  """
  return distance_per_example(x_g, target, distance=distance, c=c)
