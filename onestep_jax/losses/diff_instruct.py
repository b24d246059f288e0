"""Diff-Instruct's generator loss (Luo et al. 2023, arXiv 2305.18455, Eq. 3.4)."""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to


def diff_instruct_generator_loss(*, x_g: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray,
                                 teacher_denoiser: Callable, fake_denoiser: Callable,
                                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Surrogate whose gradient is the Integral-KL gradient, per example [B].

  With x_t = x_g + sigma n, the loss is sum(sg(D_fake(x_t) - D_teacher(x_t)) * x_g). It injects a
  gradient: d loss / d x_g = D_fake - D_teacher = sigma^2 (s_fake - s_teacher), i.e. the IKL
  gradient with weight w(sigma) = sigma^2, and flows into the generator only through x_g (no
  backpropagation through either score network). Its value is not a divergence.
  """
  x_t = jax.lax.stop_gradient(x_g) + expand_to(sigma, x_g) * noise
  direction = jax.lax.stop_gradient(fake_denoiser(x_t, sigma, labels) -
                                    teacher_denoiser(x_t, sigma, labels))
  return jnp.sum((direction * x_g).reshape(x_g.shape[0], -1), axis=-1)
