"""Uni-Instruct's generator loss: the expanded f-divergence (Wang et al. 2025, arXiv 2505.20755).

Diffusing teacher p and student q with the same forward process, d/dt D_f(p_t || q_t) =
-(g^2 / 2) E_{q_t}[h(r_t) ||s_q - s_p||^2] with r = p / q and h(r) = f''(r) r^2 (Thm. 3.1), so
Uni-Instruct minimises, at each noise level, the expanded divergence
  J(theta) = E_{x_t ~ q_theta,t} [h(r(x_t)) ||s_q(x_t) - s_p(x_t)||^2].
Its gradient has three parts (the paper's Thm. 3.2 shape: a Diff-Instruct-type term plus a
SIM-type term; the derivation below is ours and is tested against autodiff on Gaussians). With
delta = s_q - s_p: differentiating q_theta inside the expectation and inside r gives the
sampling-path term with weight h - r h' and, from the x-dependence of that weight, a
Diff-Instruct-type term with weight r^2 h'' ||delta||^2; differentiating s_q uses the
score-projection identity of SIM (arXiv 2410.16794), which moves the gradient onto the samples
and, through h(r(x_t)) with grad_x r = -r delta, adds a second Diff-Instruct-type weight
2 r h' delta . (s_q - grad log q(x_t | x_g)), whose mean given x_t is zero but not given z.
"""
from __future__ import annotations

from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp

from onestep_jax.losses.common import (MIN_NORMALIZER, check_generator_inputs, mean_per_example,
                                       noised, noisy_denoisings, sum_per_example)
from onestep_jax.losses.divergences import checked_ratio, h_and_derivatives
from onestep_jax.losses.f_distill import weight_means


def uni_instruct_generator_loss(*, x_g: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray,
                                teacher_denoiser: Callable, fake_denoiser: Callable,
                                ratio: Optional[jnp.ndarray] = None,
                                ratio_in_range: Optional[jnp.ndarray] = None,
                                divergence: str = 'forward_kl',
                                labels: Optional[jnp.ndarray] = None, normalize: bool = True,
                                sampling_path: bool = True,
                                projection_ratio_term: bool = True,
                                clip_di_weight: bool = False,
                                weight_bins: int = 0, di_term: bool = True) -> jnp.ndarray:
  """Surrogate whose gradient is the gradient of the expanded f-divergence, per example [B].

  In denoiser units, with x_t = x_g + sigma n, y_r = D_teacher(x_t), y_f = D_fake(x_t),
  u = y_f - y_r (= sigma^2 (s_q - s_p)) and b = u . (y_f - x_g):
    loss = c / sigma^2 * sg(u) . x_g  +  sg(h - r h') ||u||^2  -  2 sg(h) b,
    c = sg(r^2 h''(r) ||u||^2 + 2 r h'(r) b),
  whose Diff-Instruct-type weight c carries 1 / sigma^2: at small sigma it multiplies the
  networks' errors, not the scores' difference (on digits, forward KL diverged with it).
  gradients flowing through x_g and through x_t into both denoisers' inputs (the caller keeps
  their parameters fixed, as for SiD). If D_fake is the exact denoiser of q_theta and r the exact
  ratio, the expected gradient is the gradient of sigma^4 E_{q_theta}[h(r) ||s_q - s_p||^2]
  (tested for every row of the f table). Special cases (tested): reverse KL (h = 1) is twice SiD
  at alpha = 1/2, the Fisher-divergence gradient; without the sampling-path term it is SIM with
  the L2 distance (SiD at alpha = 1), which is what the official code calls Grad(SIM); forward KL
  (h = r) is the gradient of the Fisher divergence sampled from the teacher.

  Args:
    ratio: r = p / q at x_t per example [B] (see onestep_jax.losses.f_distill.density_ratio);
      None for reverse KL.
    ratio_in_range: per example [B], 1 where `ratio` was not clipped and 0 where it was
      (onestep_jax.losses.f_distill.ratio_within_range): h' and h'' are multiplied by it, since
      h(clip(r)) is flat where r is clipped. Not exact either: the weight h(clip(r)) also has
      point masses of h'' at the clip's ends, which no per-example weight carries (on a 1-D
      Gaussian neither form gives the clipped divergence's gradient). None: h' and h'' are
      taken at the clipped ratio.
    normalize: divide by SiD's sg(mean|x_g - y_r|) (at least 1e-5), as the official code does.
    sampling_path: keep the sg(h - r h') ||u||^2 term (False: the official code's choice).
    projection_ratio_term: keep 2 r h'(r) b in c, the score projection's dependence on r (False:
      the official code's choice, which weights the SIM-type term by h alone; forward KL is then
      exactly r * Grad(SIM)). Its mean given x_t is zero but not given z, so dropping it
      biases the gradient.
    clip_di_weight: use max(c, 0). Not exact, but needed with an estimated ratio when h is
      concave: far from the teacher r^2 h'' ||u||^2 makes c negative, and the Diff-Instruct-type
      term then pushes the generator away from the teacher (on the ring, Jensen-Shannon and
      squared Hellinger collapsed to a point without it and covered 8/8 modes with it).
    di_term: keep the Diff-Instruct-type term c / sigma^2 sg(u) . x_g (exact). False drops it,
      which is not exact: the loss is then h(r) times SIM's (plus the sampling-path term). Its
      weight ||u||^2 / sigma^2 squares the networks' errors and divides them by sigma^2; at
      sigma <= 0.1 its gradient was 1.5-3.7x the SIM-type term's in the ring's Pearson chi^2 run
      (benchmarks/uni_instruct_terms.py), 2.6-8.7x with `weight_bins` and a clipped ratio. (The
      official code's DI weights use ||u|| where this gradient has ||u||^2 / sigma^2.)
    weight_bins: > 0 divides h, h' and h'' by the mean of h among the examples of the same
      noise-level bin (onestep_jax.losses.f_distill.weight_means): the same divergence with each
      noise level reweighted, so that every level keeps reverse KL's share of the gradient
      (f-distill's normalisation, which the paper does not use; 0: none).
  """
  check_generator_inputs(x_g, sigma, noise)
  ratio = jax.lax.stop_gradient(checked_ratio(ratio, divergence, x_g.shape[0]))
  h, dh, d2h = h_and_derivatives(divergence, ratio)
  if ratio_in_range is not None:
    chex.assert_equal_shape([ratio_in_range, ratio])
    inside = jax.lax.stop_gradient(ratio_in_range)
    dh, d2h = dh * inside, d2h * inside
  if weight_bins:
    scale = jax.lax.stop_gradient(weight_means(h, sigma=sigma, weight_bins=weight_bins))
    h, dh, d2h = h / scale, dh / scale, d2h / scale
  x_t = noised(x_g, sigma, noise)
  y_real, y_fake = noisy_denoisings(x_t=x_t, sigma=sigma, teacher_denoiser=teacher_denoiser,
                                    fake_denoiser=fake_denoiser, labels=labels)
  u = y_fake - y_real
  sq = sum_per_example(u**2)
  b = sum_per_example(u * (y_fake - x_g))
  loss = -2 * h * b
  if di_term:
    c = ratio**2 * d2h * sq + (2 * ratio * dh * b if projection_ratio_term else 0.0)
    c = jax.lax.stop_gradient(c) / sigma**2
    if clip_di_weight:
      c = jnp.maximum(c, 0.0)
    loss = c * sum_per_example(jax.lax.stop_gradient(u) * x_g) + loss
  if sampling_path:
    loss = loss + (h - ratio * dh) * sq
  if normalize:
    w = jnp.maximum(mean_per_example(jnp.abs(x_g - y_real)), MIN_NORMALIZER)
    loss = loss / jax.lax.stop_gradient(w)
  return loss
