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

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    return self.mixture.sample_numpy(num, rng)


class FormulaDataset(SyntheticDataset):
  """Samples from `draw(rng, num) -> [num, *example_shape]`, a closed-form sampler."""

  def __init__(self, draw: Callable[[np.random.Generator, int], np.ndarray], *, name: str,
               example_shape: tuple[int, ...]):
    self._formula = draw
    self.name = name
    self.example_shape = tuple(example_shape)

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(self._formula(rng, num), np.float32).reshape((num, *self.example_shape))
