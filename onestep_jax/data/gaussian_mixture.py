"""Gaussian mixtures as analytic diffusion teachers.

Under x_t = alpha x_0 + sigma eps with x_0 ~ sum_k pi_k N(mu_k, S_k), every marginal is again a
mixture, p_t = sum_k pi_k N(alpha mu_k, alpha^2 S_k + sigma^2 I), so its log-density, score
grad log p_t and denoiser E[x_0 | x_t] are exact at every noise level (the noised data density
p(x; sigma) = p_data * N(0, sigma^2 I) of Karras et al. 2022, arXiv 2206.00364, Sec. 2).
Each covariance is diagonalised once, S_k = U_k diag(lam_k) U_k^T, so any sigma (scalar or
per example) costs only rotations.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _per_example(v, batch: int, dtype) -> jnp.ndarray:
  v = jnp.asarray(v, dtype)
  if v.ndim == 0:
    return jnp.broadcast_to(v, (batch,))
  if v.shape != (batch,):
    raise ValueError(f'expected a scalar or shape ({batch},) noise level, got shape {v.shape}')
  return v


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """sum_k weights[k] N(means[k], covs[k]) in `dim` dimensions, with exact diffusion marginals."""

  weights: np.ndarray  # [K], positive, sums to one
  means: np.ndarray  # [K, D]
  covs: np.ndarray  # [K, D, D], symmetric positive definite
  eigvals: np.ndarray = dataclasses.field(init=False, repr=False)  # [K, D]
  eigvecs: np.ndarray = dataclasses.field(init=False, repr=False)  # [K, D, D]

  def __post_init__(self):
    w = np.asarray(self.weights, np.float64)
    mu = np.asarray(self.means, np.float64)
    cov = np.asarray(self.covs, np.float64)
    if mu.ndim != 2:
      raise ValueError(f'means must have shape [K, D], got {mu.shape}')
    k, d = mu.shape
    if w.shape != (k,):
      raise ValueError(f'weights must have shape ({k},) to match means {mu.shape}, got {w.shape}')
    if np.any(w <= 0) or not np.isfinite(w).all():
      raise ValueError('mixture weights must be positive and finite')
    if cov.shape != (k, d, d):
      raise ValueError(f'covs must have shape ({k}, {d}, {d}), got {cov.shape}')
    if not np.allclose(cov, np.swapaxes(cov, 1, 2)):
      raise ValueError('covariances must be symmetric')
    lam, vec = np.linalg.eigh(cov)
    if np.any(lam <= 0):
      raise ValueError('covariances must be positive definite')
    object.__setattr__(self, 'weights', (w / w.sum()).astype(np.float32))
    object.__setattr__(self, 'means', mu.astype(np.float32))
    object.__setattr__(self, 'covs', cov.astype(np.float32))
    object.__setattr__(self, 'eigvals', lam.astype(np.float32))
    object.__setattr__(self, 'eigvecs', vec.astype(np.float32))

  @classmethod
  def isotropic(cls, *, weights: Optional[Sequence[float]] = None, means, std) -> 'GaussianMixture':
    """Components N(means[k], std_k^2 I); `std` is a scalar or one value per component."""
    mu = np.asarray(means, np.float64)
    k, d = mu.shape
    std = np.broadcast_to(np.asarray(std, np.float64), (k,))
    if not np.all(std > 0):
      raise ValueError(f'std must be positive, got {std.tolist()}')
    w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, np.float64)
    return cls(weights=w, means=mu, covs=std[:, None, None]**2 * np.eye(d)[None])

  @classmethod
  def diagonal(cls, *, weights: Optional[Sequence[float]] = None, means, variances) -> 'GaussianMixture':
    """Components N(means[k], diag(variances[k]))."""
    mu = np.asarray(means, np.float64)
    var = np.broadcast_to(np.asarray(variances, np.float64), mu.shape)
    w = np.full(mu.shape[0], 1.0 / mu.shape[0]) if weights is None else np.asarray(weights)
    return cls(weights=w, means=mu, covs=var[:, :, None] * np.eye(mu.shape[1])[None])

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  @property
  def num_components(self) -> int:
    return self.means.shape[0]

  def mean(self) -> np.ndarray:
    """Mean of the clean distribution."""
    return (self.weights[:, None] * self.means).sum(0)

  def covariance(self) -> np.ndarray:
    """Covariance of the clean distribution (law of total covariance)."""
    m = self.mean()
    dev = self.means - m
    within = (self.weights[:, None, None] * self.covs).sum(0)
    between = (self.weights[:, None, None] * dev[:, :, None] * dev[:, None, :]).sum(0)
    return within + between

  def _check(self, x) -> jnp.ndarray:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f'expected points of shape [B, {self.dim}], got {x.shape}')
    return x

  def _rotated(self, x, sigma, alpha):
    """Per-component residual in each eigenbasis and the noisy eigenvalues, [B, K, D] each."""
    x = self._check(x)
    b = x.shape[0]
    sigma = _per_example(sigma, b, x.dtype)
    alpha = _per_example(alpha, b, x.dtype)
    resid = x[:, None, :] - alpha[:, None, None] * self.means[None]  # [B, K, D]
    z = jnp.einsum('kdj,bkd->bkj', self.eigvecs, resid)  # U^T r
    var = alpha[:, None, None]**2 * self.eigvals[None] + sigma[:, None, None]**2
    return z, var, alpha

  def component_log_probs(self, x, sigma=0.0, *, alpha=1.0) -> jnp.ndarray:
    """log pi_k + log N(x; alpha mu_k, alpha^2 S_k + sigma^2 I), shape [B, K]."""
    z, var, _ = self._rotated(x, sigma, alpha)
    log_norm = -0.5 * (jnp.sum(z**2 / var, -1) + jnp.sum(jnp.log(var), -1) +
                       self.dim * math.log(2 * math.pi))
    return jnp.log(self.weights)[None] + log_norm

  def log_prob(self, x, sigma=0.0, *, alpha=1.0) -> jnp.ndarray:
    """Exact log-density of the noisy marginal p_t at x, shape [B]."""
    return jax.nn.logsumexp(self.component_log_probs(x, sigma, alpha=alpha), axis=-1)

  def responsibilities(self, x, sigma=0.0, *, alpha=1.0) -> jnp.ndarray:
    """Posterior component probabilities p(k | x_t), shape [B, K]."""
    return jax.nn.softmax(self.component_log_probs(x, sigma, alpha=alpha), axis=-1)

  def score(self, x, sigma, *, alpha=1.0) -> jnp.ndarray:
    """grad_x log p_t(x), shape [B, D]."""
    z, var, _ = self._rotated(x, sigma, alpha)
    r = jax.nn.softmax(self.component_log_probs(x, sigma, alpha=alpha), axis=-1)
    per_comp = -jnp.einsum('kdj,bkj->bkd', self.eigvecs, z / var)
    return jnp.einsum('bk,bkd->bd', r, per_comp)

  def denoise(self, x, sigma, *, alpha=1.0) -> jnp.ndarray:
    """The exact denoiser E[x_0 | x_t = x], shape [B, D]."""
    z, var, a = self._rotated(x, sigma, alpha)
    r = jax.nn.softmax(self.component_log_probs(x, sigma, alpha=alpha), axis=-1)
    gain = a[:, None, None] * self.eigvals[None] / var  # alpha S (alpha^2 S + sigma^2)^-1 in the eigenbasis
    post_mean = self.means[None] + jnp.einsum('kdj,bkj->bkd', self.eigvecs, gain * z)
    return jnp.einsum('bk,bkd->bd', r, post_mean)

  @property
  def factors(self) -> np.ndarray:
    """F_k = U_k diag(sqrt(lam_k)), so mu_k + F_k eps ~ N(mu_k, S_k); shape [K, D, D]."""
    return self.eigvecs * np.sqrt(self.eigvals)[:, None, :]

  def sample(self, key: jax.Array, num: int, *, return_labels: bool = False):
    """Exact samples of the clean mixture, [num, D] (and component labels [num] if asked)."""
    k_key, n_key = jax.random.split(key)
    labels = jax.random.categorical(k_key, jnp.log(self.weights), shape=(num,))
    eps = jax.random.normal(n_key, (num, self.dim))
    x = jnp.asarray(self.means)[labels] + jnp.einsum('bdj,bj->bd', self.factors[labels], eps)
    return (x, labels) if return_labels else x

  def sample_numpy(self, num: int, rng: np.random.Generator, *, return_labels: bool = False):
    """The same exact sampler on the host with numpy (for input pipelines), [num, D] float32
    (and component labels [num] int32 if asked)."""
    weights = self.weights.astype(np.float64)
    labels = rng.choice(len(weights), size=num, p=weights / weights.sum())
    eps = rng.standard_normal((num, self.dim))
    x = (self.means[labels] + np.einsum('bdj,bj->bd', self.factors[labels], eps)).astype(
        np.float32)
    return (x, labels.astype(np.int32)) if return_labels else x

  def subset(self, components) -> 'GaussianMixture':
    """The mixture of `components` alone, their weights renormalised (e.g. one class's modes)."""
    idx = np.asarray(components, np.int64)
    if idx.ndim != 1 or not idx.size or idx.min() < 0 or idx.max() >= self.num_components:
      raise ValueError(f'components must be indices in [0, {self.num_components}), got '
                       f'{components!r}')
    return GaussianMixture(weights=self.weights[idx], means=self.means[idx], covs=self.covs[idx])


def empirical_marginal(x_t, sigma, centres) -> tuple[jnp.ndarray, jnp.ndarray]:
  """log q_sigma(x_t) [B] and the denoiser E[c | x_t] [B, D] of the noised empirical distribution
  q_sigma = mean_j N(centres_j, sigma^2 I): a mixture of equal weights and zero-width components,
  at per-example noise levels sigma [B] (e.g. a one-step generator's samples as its stand-in)."""
  d = x_t.shape[-1]
  logits = -jnp.sum((x_t[:, None, :] - centres[None]) ** 2, -1) / (2 * sigma[:, None] ** 2)
  log_q = (jax.nn.logsumexp(logits, axis=1) - jnp.log(len(centres))
           - 0.5 * d * jnp.log(2 * jnp.pi * sigma ** 2))
  return log_q, jax.nn.softmax(logits, axis=1) @ centres
