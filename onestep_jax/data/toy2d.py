"""Two-dimensional toy distributions, scaled so each coordinate has a std of about 0.5-1.

Mixture toys ('ring8', 'grid25', 'two_modes_imbalanced') are exact GaussianMixtures (`.mixture`,
usable as analytic teachers); the ring and grid are the mode-collapse benchmarks of Metz et al.
2016 (arXiv 1611.02163, Sec. 3.1) and Srivastava et al. 2017 (arXiv 1705.07761, Sec. 5.1). The
others are explicit sampling formulas; their stds below are measured per coordinate with the
default arguments.
"""
from __future__ import annotations

import functools

import numpy as np

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.data.synthetic import FormulaDataset, MixtureDataset


def ring8(*, radius: float = 1.0, std: float = 0.05, num_classes: int = 0) -> MixtureDataset:
  """8 equal Gaussians N(radius (cos 2πk/8, sin 2πk/8), std² I); coordinate std ≈ 0.71.

  num_classes > 0 labels mode k with class k mod num_classes (2: alternate modes), for
  class-conditional teachers and guidance."""
  if not 0 <= num_classes <= 8:
    raise ValueError(f'ring8 has 8 modes; num_classes must lie in [0, 8], got {num_classes}')
  angles = 2 * np.pi * np.arange(8) / 8
  means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
  classes = np.arange(8) % num_classes if num_classes else None
  return MixtureDataset(GaussianMixture.isotropic(means=means, std=std), name='ring8',
                        component_classes=classes)


def grid25(*, spacing: float = 0.5, std: float = 0.05) -> MixtureDataset:
  """25 equal Gaussians on the 5×5 grid spacing·{-2..2}²; coordinate std ≈ 0.71."""
  ticks = spacing * np.arange(-2, 3)
  means = np.stack(np.meshgrid(ticks, ticks, indexing='ij'), axis=-1).reshape(-1, 2)
  return MixtureDataset(GaussianMixture.isotropic(means=means, std=std), name='grid25')


def two_modes_imbalanced(*, minor_weight: float = 0.1, separation: float = 2.0,
                         std: float = 0.3) -> MixtureDataset:
  """Weights (1 - w, w) at (∓separation/2, 0), exposes mode seeking; stds ≈ (0.67, 0.3)."""
  if not 0 < minor_weight < 1:
    raise ValueError(f'minor_weight must lie in (0, 1), got {minor_weight}')
  if not separation > 0:
    raise ValueError(f'separation must be positive (the minor mode on the right), got {separation}')
  means = np.array([[-separation / 2, 0.0], [separation / 2, 0.0]])
  mixture = GaussianMixture.isotropic(weights=[1 - minor_weight, minor_weight], means=means,
                                      std=std)
  return MixtureDataset(mixture, name='two_modes_imbalanced')


def _checkerboard(rng: np.random.Generator, num: int, *, half_width: float) -> np.ndarray:
  row = rng.integers(4, size=num)
  col = 2 * rng.integers(2, size=num) + row % 2  # the 8 cells with row + col even
  cell = np.stack([row, col], axis=1) + rng.random((num, 2))
  return half_width * (cell / 2 - 1)


def checkerboard(*, half_width: float = 1.5) -> FormulaDataset:
  """Uniform on the 8 dark cells of a 4×4 board on [-h, h]²; coordinate std h/√3 ≈ 0.87."""
  return FormulaDataset(functools.partial(_checkerboard, half_width=half_width),
                        name='checkerboard', example_shape=(2,))


def _moons(rng: np.random.Generator, num: int, *, noise: float) -> np.ndarray:
  t = np.pi * rng.random(num)
  upper = (rng.random(num) < 0.5)[:, None]
  arcs = np.where(upper, np.stack([np.cos(t), np.sin(t)], 1),
                  np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
  return arcs - np.array([0.5, 0.25]) + noise * rng.standard_normal((num, 2))


def moons(*, noise: float = 0.05) -> FormulaDataset:
  """Two interleaved unit half circles, centred, plus N(0, noise² I); stds ≈ (0.87, 0.50)."""
  return FormulaDataset(functools.partial(_moons, noise=noise), name='moons', example_shape=(2,))


def _swiss_roll(rng: np.random.Generator, num: int, *, scale: float, noise: float) -> np.ndarray:
  t = 1.5 * np.pi * (1 + 2 * rng.random(num))
  roll = scale * t[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
  return roll + noise * rng.standard_normal((num, 2))


def swiss_roll(*, scale: float = 0.125, noise: float = 0.02) -> FormulaDataset:
  """scale·t(cos t, sin t), t ~ U[1.5π, 4.5π], plus N(0, noise² I); stds ≈ (0.83, 0.87)."""
  return FormulaDataset(functools.partial(_swiss_roll, scale=scale, noise=noise),
                        name='swiss_roll', example_shape=(2,))


def _spiral(rng: np.random.Generator, num: int, *, radius: float, turns: float,
            noise: float) -> np.ndarray:
  span = 2 * np.pi * turns
  t = span * np.sqrt(rng.random(num))  # uniform in arc length along r ∝ angle
  phase = t + np.pi * rng.integers(2, size=num)
  arm = radius * (t / span)[:, None] * np.stack([np.cos(phase), np.sin(phase)], 1)
  return arm + noise * rng.standard_normal((num, 2))


def spiral(*, radius: float = 1.5, turns: float = 1.5, noise: float = 0.02) -> FormulaDataset:
  """Two opposite Archimedean arms r = radius·angle/(2π turns); coordinate std ≈ radius/2."""
  return FormulaDataset(functools.partial(_spiral, radius=radius, turns=turns, noise=noise),
                        name='spiral', example_shape=(2,))


TOYS = {
    'ring8': ring8,
    'grid25': grid25,
    'two_modes_imbalanced': two_modes_imbalanced,
    'checkerboard': checkerboard,
    'moons': moons,
    'swiss_roll': swiss_roll,
    'spiral': spiral,
}
