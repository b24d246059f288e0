"""Metrics on features [N, F] of any extractor: FID, KID and k-NN precision/recall.

These run on the host in float64 (NumPy/SciPy): they are evaluation-time reductions over
thousands of samples, where float32 covariances and matrix square roots lose digits. Features may
be NumPy or JAX arrays. `FeatureStatistics` accumulates FID statistics batch by batch.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np
from scipy import linalg

from onestep_jax.atomic import atomic_path

FID_METHODS = ('sqrtm', 'eigh')


def _as_features(features, name: str) -> np.ndarray:
  f = np.asarray(features, np.float64)
  if f.ndim != 2:
    raise ValueError(f'{name} must have shape [num_samples, num_features], got shape {f.shape}')
  if not np.isfinite(f).all():
    raise ValueError(f'{name} contains non-finite values')
  return f


def _as_pair(real, fake, *, min_size: int) -> Tuple[np.ndarray, np.ndarray]:
  real, fake = _as_features(real, 'real'), _as_features(fake, 'fake')
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f'real and fake features must have the same width, got {real.shape} and '
                     f'{fake.shape}')
  for name, f in (('real', real), ('fake', fake)):
    if f.shape[0] < min_size:
      raise ValueError(f'{name} needs at least {min_size} samples, got {f.shape[0]}')
  return real, fake


class FeatureStatistics:
  """Running mean and covariance of features in float64, fed one batch at a time.

  Batches are merged with the pairwise update of Chan, Golub & LeVeque (1979): each batch's
  centred sum of outer products is added to the running one with a correction for the shift of
  the mean, which avoids the cancellation of E[xx^T] - mu mu^T when |mu| >> std. Statistics of
  disjoint sets (other batches, other processes) merge the same way (`merge`), and `state` /
  `from_state` carry them through files or collectives bit for bit.
  """

  def __init__(self, dim: Optional[int] = None):
    """`dim` (the feature width) fixes the shapes of `state` before any feature is added."""
    self.count = 0
    self._mean: Optional[np.ndarray] = None if dim is None else np.zeros(dim)
    # Sum of (x - mean)(x - mean)^T.
    self._m2: Optional[np.ndarray] = None if dim is None else np.zeros((dim, dim))

  def update(self, features) -> 'FeatureStatistics':
    """Adds a batch [B, F] (any B >= 0); returns self."""
    f = _as_features(features, 'features')
    if f.shape[0] == 0:
      self._check_width(f.shape[1])
      return self
    mean_b = f.mean(axis=0)
    centred = f - mean_b
    return self._combine(f.shape[0], mean_b, centred.T @ centred)

  def merge(self, other: 'FeatureStatistics') -> 'FeatureStatistics':
    """Adds the statistics of a disjoint set of features; returns self."""
    if other.count == 0:
      if other._mean is not None:
        self._check_width(other._mean.shape[0])
      return self
    return self._combine(other.count, other._mean, other._m2)

  def _check_width(self, width: int) -> None:
    if self._mean is not None and width != self._mean.shape[0]:
      raise ValueError(f'features have width {width}, earlier batches had '
                       f'{self._mean.shape[0]}')

  def _combine(self, b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> 'FeatureStatistics':
    """Chan et al.'s pairwise update with a set of b > 0 features of mean mean_b and m2 m2_b."""
    self._check_width(mean_b.shape[0])
    n = self.count
    if n == 0:
      self.count, self._mean, self._m2 = b, mean_b.copy(), m2_b.copy()
      return self
    delta = mean_b - self._mean
    self._mean = self._mean + delta * (b / (n + b))
    self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n * b / (n + b))
    self.count = n + b
    return self

  def state(self) -> dict[str, np.ndarray]:
    """{'count', 'mean', 'm2'} as float64 arrays (exact; needs `dim` or one update first)."""
    if self._mean is None:
      raise ValueError('the state of empty statistics needs FeatureStatistics(dim=...)')
    return {'count': np.float64(self.count), 'mean': self._mean, 'm2': self._m2}

  @classmethod
  def from_state(cls, state) -> 'FeatureStatistics':
    """The inverse of `state`."""
    stats = cls(dim=int(np.shape(state['mean'])[0]))
    stats.count = int(state['count'])
    stats._mean = np.asarray(state['mean'], np.float64).copy()
    stats._m2 = np.asarray(state['m2'], np.float64).copy()
    return stats

  @property
  def mean(self) -> np.ndarray:
    if self.count == 0:
      raise ValueError('no features were added')
    return self._mean

  @property
  def covariance(self) -> np.ndarray:
    """Unbiased sample covariance (divides by count - 1, as numpy.cov)."""
    if self.count < 2:
      raise ValueError(f'the covariance needs at least 2 samples, got {self.count}')
    return self._m2 / (self.count - 1)

  def save(self, path: str, **extra) -> None:
    """Writes mu, sigma (the key names of pytorch-fid and EDM), count and any `extra` arrays to
    an .npz file, atomically."""
    with atomic_path(path) as tmp:
      with open(tmp, 'wb') as f:
        np.savez(f, mu=self.mean, sigma=self.covariance, count=self.count, **extra)


def load_statistics(path: str, *, dim: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) from an .npz with those keys (ours, pytorch-fid's or EDM's reference files).

  Raises:
    FileNotFoundError: no such file.
    ValueError: keys missing, mu not a vector (of length `dim` if given), sigma not a symmetric
      square matrix of mu's length, or non-finite values.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'no feature statistics file at {path}')
  with np.load(path, allow_pickle=False) as data:
    missing = {'mu', 'sigma'} - set(data.files)
    if missing:
      raise ValueError(f'{path} lacks keys {sorted(missing)}; found {sorted(data.files)} '
                       "(expected the 'mu'/'sigma' layout of EDM and pytorch-fid)")
    mu, sigma = data['mu'].astype(np.float64), data['sigma'].astype(np.float64)
  f = mu.shape[0] if mu.ndim == 1 else None
  if f is None or (dim is not None and f != dim):
    want = f'[{dim}]' if dim is not None else 'a vector'
    raise ValueError(f'{path}: mu has shape {mu.shape}, expected {want}; these statistics '
                     'belong to another feature network')
  if sigma.shape != (f, f):
    raise ValueError(f'{path}: sigma has shape {sigma.shape}, expected ({f}, {f}) to match mu')
  if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
    raise ValueError(f'{path}: mu or sigma contains non-finite values')
  if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8 * np.abs(sigma).max()):
    raise ValueError(f'{path}: sigma is not symmetric, so it is not a covariance')
  return mu, sigma


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps):
  """tr sqrt(S1 S2) with scipy's sqrtm, patched as pytorch-fid does."""
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    # Near-singular product: regularise both covariances with eps * I and retry.
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f'matrix square root has a large imaginary component '
                       f'({np.abs(covmean.imag).max():.3g}); the covariances are ill-conditioned')
    covmean = covmean.real
  return np.trace(covmean)


def _trace_sqrt_product_eigh(sigma1, sigma2):
  """tr sqrt(S1 S2) = sum_i sqrt(lambda_i(A S2 A)) with A = S1^(1/2), all symmetric."""
  lam, vec = np.linalg.eigh(sigma1)
  root = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
  inner = root @ sigma2 @ root
  return np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, method: str = 'sqrtm',
                     eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, arXiv 1706.08500).

  The squared 2-Wasserstein distance between N(mu1, S1) and N(mu2, S2). method 'sqrtm' follows
  pytorch-fid (scipy.linalg.sqrtm; retried with eps * I added to both covariances when the result
  is not finite; the imaginary part is dropped when its diagonal is below 1e-3, otherwise an
  error); 'eigh' uses the symmetric eigen-decomposition, which is faster and stays real for
  singular covariances (e.g. fewer samples than features).
  """
  if method not in FID_METHODS:
    raise ValueError(f'unknown FID method {method!r}; valid choices: {list(FID_METHODS)}')
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  f = mu1.shape[0]
  if mu1.shape != (f,) or mu2.shape != (f,):
    raise ValueError(f'means must be vectors of one length, got {mu1.shape} and {mu2.shape}')
  if sigma1.shape != (f, f) or sigma2.shape != (f, f):
    raise ValueError(f'covariances must have shape ({f}, {f}), got {sigma1.shape} and '
                     f'{sigma2.shape}')
  if method == 'sqrtm':
    tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
  else:
    tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_features(real, fake, *, method: str = 'sqrtm') -> float:
  """Frechet distance between the Gaussian fits (float64 mean, unbiased covariance) of two sets."""
  real, fake = _as_pair(real, fake, min_size=2)
  stats = [FeatureStatistics().update(f) for f in (real, fake)]
  return frechet_distance(stats[0].mean, stats[0].covariance, stats[1].mean, stats[1].covariance,
                          method=method)


def _polynomial_kernel(a, b):
  """KID's cubic kernel k(a, b) = (a.b / F + 1)^3 (Binkowski et al. 2018, arXiv 1801.01401)."""
  return (a @ b.T / a.shape[1] + 1.0)**3


def kid(real, fake, *, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> Tuple[float, float]:
  """Kernel Inception Distance: (mean, std) of the unbiased MMD^2 over random subsets.

  Each of `num_subsets` draws min(subset_size, N_real, N_fake) samples of each set without
  replacement and computes the unbiased MMD^2 with the cubic polynomial kernel (within-set
  diagonals excluded), as in Binkowski et al. 2018 and clean-fid/torch-fidelity (100 subsets of
  1000). Unbiased: ~0 in expectation for two samples of one distribution, possibly negative.
  """
  real, fake = _as_pair(real, fake, min_size=2)
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(f'need num_subsets >= 1 and subset_size >= 2, got {num_subsets} and '
                     f'{subset_size}')
  m = min(subset_size, real.shape[0], fake.shape[0])
  rng = np.random.default_rng(seed)
  values = np.empty(num_subsets)
  for i in range(num_subsets):
    x = real[rng.choice(real.shape[0], m, replace=False)]
    y = fake[rng.choice(fake.shape[0], m, replace=False)]
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    values[i] = within - 2.0 * kxy.mean()
  return float(values.mean()), float(values.std())


def _sq_dists(a, b):
  d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
  return np.maximum(d2, 0.0)


def _knn_sq_radii(x, k, batch_size):
  """Squared distance from each row of x to its k-th nearest other row, [N]."""
  out = np.empty(x.shape[0])
  for s in range(0, x.shape[0], batch_size):
    d2 = _sq_dists(x[s:s + batch_size], x)
    # Column k of the partition is the (k+1)-th smallest: the point itself counts as the first.
    out[s:s + batch_size] = np.partition(d2, k, axis=1)[:, k]
  return out


def _fraction_inside(queries, centres, sq_radii, batch_size):
  """Fraction of queries inside at least one ball (centres[j], radius_j)."""
  inside = 0
  for s in range(0, queries.shape[0], batch_size):
    d2 = _sq_dists(queries[s:s + batch_size], centres)
    inside += int(np.any(d2 <= sq_radii[None, :], axis=1).sum())
  return inside / queries.shape[0]


def precision_recall(real, fake, *, k: int = 3, batch_size: int = 256) -> Tuple[float, float]:
  """Improved precision and recall (Kynkaenniemi et al. 2019, arXiv 1904.06991), k-NN manifolds.

  Each set's manifold is the union of balls around its points with radius the distance to the
  k-th nearest neighbour in the same set. precision = fraction of fake samples inside the real
  manifold, recall = fraction of real samples inside the fake manifold. Distances are exact
  (float64, `batch_size` rows at a time: memory O(batch_size * N), time O(N^2 F)); features are
  centred on the pooled mean first.
  """
  if k < 1:
    raise ValueError(f'k must be at least 1, got {k}')
  real, fake = _as_pair(real, fake, min_size=k + 1)
  centre = np.concatenate([real, fake]).mean(0)
  real, fake = real - centre, fake - centre
  precision = _fraction_inside(fake, real, _knn_sq_radii(real, k, batch_size), batch_size)
  recall = _fraction_inside(real, fake, _knn_sq_radii(fake, k, batch_size), batch_size)
  return precision, recall
