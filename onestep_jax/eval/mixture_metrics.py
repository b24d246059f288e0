"""Metrics of samples against a known Gaussian mixture: mode assignment, coverage, exact NLL.

A sample is assigned to its most likely component, argmax_k pi_k N(x; mu_k, S_k). It is
"off-mode" when its Mahalanobis distance to every component exceeds the radius that holds as much
of a D-dimensional Gaussian as +-`off_mode_std` standard deviations hold in 1-D (for the default
4: a fraction 1 - 6.3e-5, in any dimension), so exact samples are almost never off-mode and the
criterion does not tighten as D grows. Off-mode samples belong to no mode. All functions are pure
JAX in the samples (the mixture is a constant): wrap them in a lambda to jit.
"""
from __future__ import annotations

import math
from typing import Dict

import jax.numpy as jnp
from scipy import special

from onestep_jax.data.gaussian_mixture import GaussianMixture

DEFAULT_MIN_SHARE = 0.01  # a mode is covered if it receives at least 1% of all samples
DEFAULT_OFF_MODE_STD = 4.0


def _check(samples, mixture: GaussianMixture) -> jnp.ndarray:
  samples = jnp.asarray(samples)
  if samples.ndim != 2 or samples.shape[1] != mixture.dim:
    raise ValueError(f'samples must have shape [N, {mixture.dim}] to match the mixture, '
                     f'got shape {samples.shape}')
  if samples.shape[0] < 1:
    raise ValueError('samples must hold at least one point')
  return samples


def off_mode_radius(dim: int, off_mode_std: float = DEFAULT_OFF_MODE_STD) -> float:
  """Mahalanobis radius r with P(chi2_dim <= r^2) = P(|N(0, 1)| <= off_mode_std)."""
  if off_mode_std <= 0:
    raise ValueError(f'off_mode_std must be positive, got {off_mode_std}')
  mass = special.erf(off_mode_std / math.sqrt(2.0))
  # The chi^2_dim quantile, 2 P^-1(dim / 2, mass) with P the regularised lower incomplete gamma
  # (scipy.stats.chi2.ppf computes the same, but importing scipy.stats costs ~40 MB and seconds).
  return float(math.sqrt(2.0 * special.gammaincinv(dim / 2.0, mass)))


def assign_modes(samples, mixture: GaussianMixture, *,
                 off_mode_std: float = DEFAULT_OFF_MODE_STD) -> jnp.ndarray:
  """Most likely component of each sample, [N] int32, or -1 for off-mode samples."""
  samples = _check(samples, mixture)
  log_joint = mixture.component_log_probs(samples)  # [N, K]
  # Invert log pi_k + log N(x; mu_k, S_k) for the squared Mahalanobis distance to each mode.
  log_norm = jnp.sum(jnp.log(mixture.eigvals), -1) + mixture.dim * math.log(2 * math.pi)
  maha2 = -2.0 * (log_joint - jnp.log(mixture.weights)) - log_norm
  on_mode = jnp.min(maha2, axis=-1) <= off_mode_radius(mixture.dim, off_mode_std)**2
  return jnp.where(on_mode, jnp.argmax(log_joint, axis=-1), -1).astype(jnp.int32)


def _mass(labels: jnp.ndarray, num_modes: int) -> jnp.ndarray:
  one_hot = labels[:, None] == jnp.arange(num_modes)[None]
  return jnp.mean(one_hot.astype(jnp.float32), axis=0)


def _check_min_share(min_share: float) -> None:
  if not 0 < min_share <= 1:
    raise ValueError(f'min_share must be in (0, 1], got {min_share}')


def per_mode_mass(samples, mixture: GaussianMixture, *,
                  off_mode_std: float = DEFAULT_OFF_MODE_STD) -> jnp.ndarray:
  """Fraction of all samples assigned to each mode, [K]; sums to 1 - off-mode fraction.

  Compare with `mixture.weights` for mode balance (e.g. mode-seeking collapse of a light mode).
  """
  labels = assign_modes(samples, mixture, off_mode_std=off_mode_std)
  return _mass(labels, mixture.num_components)


def off_mode_fraction(samples, mixture: GaussianMixture, *,
                      off_mode_std: float = DEFAULT_OFF_MODE_STD) -> jnp.ndarray:
  """Fraction of samples farther than the off-mode radius from every mode, a scalar."""
  labels = assign_modes(samples, mixture, off_mode_std=off_mode_std)
  return jnp.mean((labels < 0).astype(jnp.float32))


def mode_coverage(samples, mixture: GaussianMixture, *, min_share: float = DEFAULT_MIN_SHARE,
                  off_mode_std: float = DEFAULT_OFF_MODE_STD) -> jnp.ndarray:
  """Fraction of modes that receive at least `min_share` of all samples, a scalar in [0, 1].

  Counting covered modes of a ring or grid mixture follows the GAN mode-collapse benchmarks
  (Srivastava et al. 2017, arXiv 1705.07761, Sec. 5.1); the 1% share is this library's default.
  With many or very light modes (K >~ 50, or weights near 1%) pass a smaller share, e.g. a
  tenth of the lightest weight. Coverage ignores off-mode mass: report `off_mode_fraction`
  beside it (samples smeared around a ring cover every mode).
  """
  _check_min_share(min_share)
  mass = per_mode_mass(samples, mixture, off_mode_std=off_mode_std)
  return jnp.mean((mass >= min_share).astype(jnp.float32))


def nll(samples, mixture: GaussianMixture) -> jnp.ndarray:
  """Mean negative log-likelihood -E[log p(x)] of the samples under the exact mixture (nats).

  For exact samples this estimates the mixture's differential entropy.
  """
  return -jnp.mean(mixture.log_prob(_check(samples, mixture)))


def mixture_report(samples, mixture: GaussianMixture, *, min_share: float = DEFAULT_MIN_SHARE,
                   off_mode_std: float = DEFAULT_OFF_MODE_STD) -> Dict[str, float]:
  """All mixture metrics as Python floats, for metric writers.

  Keys: mode_coverage, off_mode_fraction, nll and mode_mass_tv, the total variation distance
  between the assignment histogram over K modes plus an "off-mode" bin and (weights, 0).
  """
  _check_min_share(min_share)
  labels = assign_modes(samples, mixture, off_mode_std=off_mode_std)
  mass = _mass(labels, mixture.num_components)
  off = jnp.mean((labels < 0).astype(jnp.float32))
  return {
      'mode_coverage': float(jnp.mean((mass >= min_share).astype(jnp.float32))),
      'off_mode_fraction': float(off),
      'nll': float(nll(samples, mixture)),
      'mode_mass_tv': float(0.5 * (jnp.sum(jnp.abs(mass - mixture.weights)) + off)),
  }
