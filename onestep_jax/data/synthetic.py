"""Infinite analytic sources: an exact Gaussian mixture, or any explicit sampling formula."""
from __future__ import annotations

from typing import Callable

import numpy as np

from onestep_jax.data.base import SyntheticDataset
from onestep_jax.data.gaussian_mixture import GaussianMixture


class MixtureDataset(SyntheticDataset):
  """Exact samples of a GaussianMixture (exposed as `.mixture`, the analytic teacher).

  Sampling runs in numpy on the host, like every input pipeline: GaussianMixture.sample is a JAX
  function and, called eagerly per batch, would compile for every new batch shape.
  """

  def __init__(self, mixture: GaussianMixture, *, name: str = 'gaussian_mixture'):
    self.mixture = mixture
    self.name = name
    self.example_shape = (mixture.dim,)
    # x = mu_k + U_k diag(sqrt(lam_k)) eps has covariance U_k diag(lam_k) U_k^T = S_k.
    self._factors = mixture.eigvecs * np.sqrt(mixture.eigvals)[:, None, :]

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    weights = self.mixture.weights.astype(np.float64)
    labels = rng.choice(len(weights), size=num, p=weights / weights.sum())
    eps = rng.standard_normal((num, self.mixture.dim))
    x = self.mixture.means[labels] + np.einsum('bdj,bj->bd', self._factors[labels], eps)
    return x.astype(np.float32)


class FormulaDataset(SyntheticDataset):
  """Samples from `draw(rng, num) -> [num, *example_shape]`, a closed-form sampler."""

  def __init__(self, draw: Callable[[np.random.Generator, int], np.ndarray], *, name: str,
               example_shape: tuple[int, ...]):
    self._formula = draw
    self.name = name
    self.example_shape = tuple(example_shape)

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(self._formula(rng, num), np.float32).reshape((num, *self.example_shape))
