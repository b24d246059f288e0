"""f-distill: distribution matching under an f-divergence (Xu, Nie & Vahdat 2025, arXiv 2502.15681).

The density ratio r = p_teacher / q_student of noised samples comes from a discriminator trained
with real = 1 (its optimal logit is log r), and weighs the Diff-Instruct / DMD gradient per example
by h(r) (see onestep_jax.losses.divergences). Variance control follows the paper (Sec. 4.2) and the
official implementation (NVlabs/FastGen, f_distill.py): the ratio is clipped, normalised by its
mean among samples of similar noise level, and h is normalised by its batch mean.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import chex
import jax
import jax.numpy as jnp

from onestep_jax.losses.divergences import checked_ratio, get_divergence
from onestep_jax.losses.dmd import dmd_generator_loss

# Noise levels spanned by the ratio's bins, in EDM's rho = 7 time (Karras et al. 2022, Eq. 5).
_SIGMA_MIN, _SIGMA_MAX, _RHO = 0.002, 80.0, 7.0
MIN_WEIGHT_MEAN = 1e-6  # smallest batch mean of h used as a divisor


def bin_means(values: jnp.ndarray, sigma: jnp.ndarray, num_bins: int) -> jnp.ndarray:
  """Per example [B], the mean of `values` [B] over the batch's examples whose noise level falls
  in the same of `num_bins` bins, which split EDM's rho = 7 time sigma^(1/7) on [0.002, 80]
  evenly."""
  lo, hi = _SIGMA_MIN**(1 / _RHO), _SIGMA_MAX**(1 / _RHO)
  u = (jnp.asarray(sigma, jnp.float32)**(1 / _RHO) - lo) / (hi - lo)
  onehot = jax.nn.one_hot(jnp.clip(jnp.floor(u * num_bins), 0, num_bins - 1).astype(jnp.int32),
                          num_bins)
  means = (onehot.T @ values) / jnp.maximum(onehot.sum(0), 1.0)
  return onehot @ means


def check_ratio_range(ratio_range: Optional[Sequence[float]], *,
                      name: str = 'ratio_range') -> Optional[tuple[float, float]]:
  """`ratio_range` as a (lo, hi) tuple with 0 < lo < hi, or None (no clipping); `name` is the
  setting that errors name."""
  if ratio_range is None:
    return None
  error = ValueError(f'{name} must be (lo, hi) with 0 < lo < hi, got {ratio_range!r}')
  try:  # e.g. (None,), which --config.<field>=None gives for a tuple field
    lo, hi = (float(v) for v in ratio_range)
  except (TypeError, ValueError):
    raise error from None
  if not 0 < lo < hi:
    raise error
  return lo, hi


def density_ratio(*, logits: jnp.ndarray, sigma: jnp.ndarray,
                  ratio_range: Optional[Sequence[float]] = (0.1, 20.0),
                  num_bins: int = 10) -> jnp.ndarray:
  """The density ratio r = exp(logit) per example [B], stop-gradient, as f-distill uses it.

  r is clipped to `ratio_range` (FastGen: [0.1, 20], after clamping logits to +-10; None: no
  clipping) and then, with `num_bins` > 0, divided by its mean over the batch's samples whose noise
  level falls in the same bin. The bins split EDM's rho = 7 time sigma^(1/7) on [0.002, 80] evenly
  (FastGen splits its time variable evenly and keeps an EMA of the bin means, whose default rate 0
  makes it this batch mean; E_q[r] = 1 for the exact ratio at every noise level).
  """
  chex.assert_rank(logits, 1)
  chex.assert_equal_shape([logits, sigma])
  logits = jax.lax.stop_gradient(logits).astype(jnp.float32)
  ratio_range = check_ratio_range(ratio_range)
  if ratio_range is not None:
    lo, hi = ratio_range
    logits = jnp.clip(logits, math.log(lo), math.log(hi))
  ratio = jnp.exp(logits)
  if num_bins:
    ratio = ratio / bin_means(ratio, sigma, num_bins)
  return jax.lax.stop_gradient(ratio)


def ratio_within_range(*, logits: jnp.ndarray,
                       ratio_range: Optional[Sequence[float]] = (0.1, 20.0)) -> jnp.ndarray:
  """Per example [B], 1.0 where `density_ratio` leaves exp(logit) unclipped and 0.0 where it clips
  it to `ratio_range` (all ones for None). Where it clips, h(clip(r)) is flat in the logit: its
  derivatives are 0 there (apart from point masses of h'' at the clip's ends)."""
  chex.assert_rank(logits, 1)
  logits = jax.lax.stop_gradient(logits).astype(jnp.float32)
  ratio_range = check_ratio_range(ratio_range)
  if ratio_range is None:
    return jnp.ones_like(logits)
  lo, hi = ratio_range
  return ((logits > math.log(lo)) & (logits < math.log(hi))).astype(jnp.float32)


def weight_means(h: jnp.ndarray, *, sigma: Optional[jnp.ndarray] = None,
                 weight_bins: int = 0) -> jnp.ndarray:
  """The divisor that normalises the weights h [B]: their batch mean, or with `weight_bins` > 0
  their mean among the examples of the same noise-level bin (`bin_means` of `sigma`); at least
  MIN_WEIGHT_MEAN. Per noise level this is a positive constant, so dividing by it reweights the
  noise levels of the objective and h only redistributes each level's share of the gradient."""
  if weight_bins < 0:
    raise ValueError(f'weight_bins must be >= 0 (0: the batch mean), got {weight_bins}')
  if weight_bins and sigma is None:
    raise ValueError('weight_bins > 0 needs the noise levels sigma')
  mean = bin_means(h, sigma, weight_bins) if weight_bins else jnp.mean(h)
  return jnp.maximum(mean, MIN_WEIGHT_MEAN)


def divergence_weights(*, ratio: Optional[jnp.ndarray], divergence: str, batch: int,
                       normalize: bool = True, sigma: Optional[jnp.ndarray] = None,
                       weight_bins: int = 0) -> jnp.ndarray:
  """h(r) per example [B], stop-gradient; divided by `weight_means` when `normalize` (f-distill's
  second normalisation is the batch mean; `weight_bins` > 0 takes it within noise levels instead,
  so that every level keeps reverse KL's share of the gradient). `ratio` may be None only for
  divergences with a constant h."""
  h = get_divergence(divergence).h(checked_ratio(ratio, divergence, batch))
  if normalize:
    h = h / weight_means(h, sigma=sigma, weight_bins=weight_bins)
  return jax.lax.stop_gradient(h)


def f_distill_generator_loss(*, x_g: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray,
                             teacher_denoiser: Callable, fake_denoiser: Callable,
                             ratio: Optional[jnp.ndarray] = None,
                             divergence: str = 'jensen_shannon',
                             labels: Optional[jnp.ndarray] = None, normalize: bool = True,
                             normalize_weights: bool = True, weight_bins: int = 0) -> jnp.ndarray:
  """f-distill's generator surrogate, per example [B].

  With x_t = sg(x_g) + sigma n, injects d loss / d x_g = h(r) (D_fake - D_teacher)(x_t) / w, the
  f-divergence gradient of arXiv 2502.15681 (Thm. 1) in denoiser units (D_fake - D_teacher =
  sigma^2 (s_q - s_p): weight sigma^2 as in Diff-Instruct). w is DMD's normaliser
  mean|x_g - D_teacher(x_t)| when `normalize` (as in the paper), else 1. h is stop-gradient and
  nothing flows into either denoiser. With h = 1 (reverse KL) and no normalisation this is the
  Diff-Instruct gradient exactly; with the exact ratio and no normalisation its expectation is
  sigma^2 grad_theta D_f(p_sigma || q_theta,sigma) (both tested).

  Args:
    ratio: r = p / q at x_t per example [B] (see `density_ratio`); None for reverse KL.
    divergence: a row of onestep_jax.losses.divergences.DIVERGENCES.
    normalize_weights: divide h by its batch mean (f-distill, Sec. 4.2).
    weight_bins: > 0 divides h by its mean within each of this many noise-level bins instead.
  """
  h = divergence_weights(ratio=ratio, divergence=divergence, batch=x_g.shape[0],
                         normalize=normalize_weights, sigma=sigma, weight_bins=weight_bins)
  # Scaling the surrogate 0.5 ||x_g - sg(x_g - g)||^2 by a constant h scales its gradient g by h.
  return h * dmd_generator_loss(x_g=x_g, sigma=sigma, noise=noise,
                                teacher_denoiser=teacher_denoiser, fake_denoiser=fake_denoiser,
                                labels=labels, normalize=normalize)
