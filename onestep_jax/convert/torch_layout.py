"""PyTorch <-> Flax weight layouts and readable lists of state_dict names."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def to_flax(a: np.ndarray) -> np.ndarray:
  """Conv2d OIHW -> HWIO and Linear [out, in] -> [in, out]; other arrays unchanged."""
  return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T if a.ndim == 2 else a


def to_torch(a: np.ndarray) -> np.ndarray:
  """The inverse of `to_flax`."""
  return a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T if a.ndim == 2 else a


def torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of a Flax parameter shape (see `to_flax`)."""
  if len(flax_shape) == 4:
    return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
  return tuple(reversed(flax_shape)) if len(flax_shape) == 2 else tuple(flax_shape)


def name_list(names: Iterable[str], limit: int = 8) -> str:
  """The first `limit` names, sorted, and how many there are in all."""
  names = sorted(names)
  shown = ', '.join(names[:limit])
  return f'{shown}, ... ({len(names)} in all)' if len(names) > limit else shown
