"""Infinite analytic sources: an exact Gaussian mixture, or any explicit sampling formula."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from onestep_jax.data.base import SyntheticDataset
from onestep_jax.data.gaussian_mixture import GaussianMixture


class MixtureDataset(SyntheticDataset):
  """Exact samples of a GaussianMixture (exposed as `.mixture`, the analytic teacher)."""

  def __init__(self, mixture: GaussianMixture, *, name: str = 'gaussian_mixture'):
    self.mixture = mixture
    self.name = name
    self.example_shape = (mixture.dim,)

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    # A full 64-bit threefry key from the numpy stream; drawn on the host CPU, like all data.
    key = jax.random.wrap_key_data(rng.integers(2**32, size=2, dtype=np.uint32),
                                   impl='threefry2x32')
    with jax.default_device(jax.local_devices(backend='cpu')[0]):
      return np.asarray(self.mixture.sample(key, num), np.float32)


class FormulaDataset(SyntheticDataset):
  """Samples from `draw(rng, num) -> [num, *example_shape]`, a closed-form sampler."""

  def __init__(self, draw: Callable[[np.random.Generator, int], np.ndarray], *, name: str,
               example_shape: tuple[int, ...]):
    self._formula = draw
    self.name = name
    self.example_shape = tuple(example_shape)

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(self._formula(rng, num), np.float32).reshape((num, *self.example_shape))
