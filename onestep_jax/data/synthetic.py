"""Infinite analytic sources: an exact Gaussian mixture, or any explicit sampling formula."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from onestep_jax.data.base import SyntheticDataset
from onestep_jax.data.gaussian_mixture import GaussianMixture


class MixtureDataset(SyntheticDataset):
  """Exact samples of a GaussianMixture (exposed as `.mixture`, the analytic teacher).

  Sampling runs in numpy on the host, like every input pipeline: GaussianMixture.sample is a JAX
  function and, called eagerly per batch, would compile for every new batch shape.
  """

  def __init__(self, mixture: GaussianMixture, *, name: str = 'gaussian_mixture',
               component_classes: Optional[Sequence[int]] = None):
    """component_classes: the class label of each component (batches then carry 'label'), or
    None for unlabelled data."""
    self.mixture = mixture
    self.name = name
    self.example_shape = (mixture.dim,)
    self.component_classes = None
    if component_classes is not None:
      classes = np.asarray(component_classes, np.int32)
      if classes.shape != (mixture.num_components,) or classes.min() < 0:
        raise ValueError(f'component_classes must be {mixture.num_components} non-negative '
                         f'labels, one per component, got {component_classes!r}')
      self.component_classes = classes
      self.num_classes = int(classes.max()) + 1

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    return self.mixture.sample_numpy(num, rng)

  def _draw_batch(self, num: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if self.component_classes is None:
      return super()._draw_batch(num, rng)
    x, component = self.mixture.sample_numpy(num, rng, return_labels=True)
    return {'x': x, 'label': self.component_classes[component]}

  def class_mixture(self, label: int) -> GaussianMixture:
    """The exact class-conditional distribution: the mixture of class `label`'s components."""
    if self.component_classes is None:
      raise ValueError(f'dataset {self.name!r} has no labels')
    return self.mixture.subset(np.flatnonzero(self.component_classes == label))


class FormulaDataset(SyntheticDataset):
  """Samples from `draw(rng, num) -> [num, *example_shape]`, a closed-form sampler."""

  def __init__(self, draw: Callable[[np.random.Generator, int], np.ndarray], *, name: str,
               example_shape: tuple[int, ...]):
    self._formula = draw
    self.name = name
    self.example_shape = tuple(example_shape)

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(self._formula(rng, num), np.float32).reshape((num, *self.example_shape))
