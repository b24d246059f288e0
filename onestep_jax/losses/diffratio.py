"""DiffRatio: one-step generators trained by a learned density ratio, without teacher scores.

Chen, Zhang, He et al. 2025/26, arXiv 2502.08005 (v1-v3: "Towards Training One-Step Diffusion
Models Without Distillation"; v4: "DiffRatio"). Distribution matching needs only the score
difference grad log q_t - grad log p_t of the noised student and data distributions, which is
-grad_x of the log density ratio log p_t / q_t. A time-conditioned classifier between noised data
(label 1) and noised generator samples (label 0) has that log ratio as its optimal logit, so its
input gradient replaces teacher and fake scores alike. Any row of the f table then weighs it by
h(r) with r = exp(logit), as in f-distill (arXiv 2502.15681); reverse KL is the Diff-Instruct /
VSD gradient.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import chex
import jax
import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.losses.common import check_generator_inputs, inject_gradient, noised
from onestep_jax.losses.divergences import get_divergence
from onestep_jax.losses.f_distill import density_ratio, divergence_weights


def diffratio_generator_loss(*, x_g: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray,
                             logit_fn: Callable, divergence: str = 'reverse_kl',
                             labels: Optional[jnp.ndarray] = None,
                             ratio_range: Optional[Sequence[float]] = (0.1, 20.0),
                             ratio_bins: int = 10, normalize_weights: bool = True
                             ) -> jnp.ndarray:
  """Surrogate injecting the classifier's distribution-matching gradient, per example [B].

  With x_t = sg(x_g) + sigma n and l = logit_fn(x_t, sigma, labels) [B] (approximately
  log p_sigma / q_sigma at x_t), injects d loss / d x_g = -sigma^2 h(r) grad_x l(x_t), r = exp(l),
  i.e. sigma^2 h(r) (s_q - s_p): the f-distill gradient with the score difference read from the
  classifier. No teacher and no fake score is evaluated; the classifier's parameters get no
  gradient. With the exact log ratio, no clipping and no normalisation its expectation is
  sigma^2 grad_theta D_f(p_sigma || q_theta,sigma) (tested). The value 0.5 ||g||^2 is not a
  divergence.

  Args:
    logit_fn: (x, sigma, labels) -> logits [B]; examples must not interact (per-example input
      gradients are read from the gradient of the logits' sum).
    divergence: a row of onestep_jax.losses.divergences.DIVERGENCES.
    ratio_range, ratio_bins: clipping and noise-level normalisation of r (see
      onestep_jax.losses.f_distill.density_ratio); they shape only h, not the direction.
    normalize_weights: divide h by its batch mean.
  """
  check_generator_inputs(x_g, sigma, noise)
  x_t = noised(jax.lax.stop_gradient(x_g), sigma, noise)
  logits, vjp = jax.vjp(lambda x: logit_fn(x, sigma, labels), x_t)
  chex.assert_shape(logits, (x_g.shape[0],))
  (grad_logit,) = vjp(jnp.ones_like(logits))
  ratio = None
  if get_divergence(divergence).uses_ratio:
    ratio = density_ratio(logits=logits, sigma=sigma, ratio_range=ratio_range,
                          num_bins=ratio_bins)
  h = divergence_weights(ratio=ratio, divergence=divergence, batch=x_g.shape[0],
                         normalize=normalize_weights)
  grad = -expand_to(h * sigma**2, x_g) * grad_logit
  return inject_gradient(x_g, jax.lax.stop_gradient(grad))
