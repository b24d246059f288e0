"""In-memory (or memory-mapped) arrays as a dataset, and the loader for user .npy / .npz files.

Layout rules of `load_arrays`:
  * x of shape [N, H, W, C] (ndim 4) is an image set. uint8 pixels are mapped to [-1, 1];
    float pixels must already lie in [-1, 1]. `layout='auto'` reads NHWC unless only axis 1 looks
    like a channel axis (size 1, 3 or 4) and axis 3 does not, in which case it reads NCHW;
    `layout='nhwc'` / `'nchw'` forces the choice.
  * any other x with ndim >= 2 ([N, D], [N, L, D], ...) is used as float32 as is, or
    standardised per feature with `standardize=True`.
  * labels come from the npz key 'label' or 'labels' (integers in [0, num_classes)).
  * every fifth row (index % 5 == 4) is the 'test' split, held out from training for
    evaluation; the other rows are 'train', and 'all' keeps every row (as for `digits`).
  * NaN or Inf values stop the load with their count.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from onestep_jax.data.base import FiniteDataset
from onestep_jax.data.images import uint8_to_unit

_LAYOUTS = ('auto', 'nhwc', 'nchw')
_CHANNEL_SIZES = (1, 3, 4)
SPLITS = ('train', 'test', 'all')
TEST_EVERY = 5  # row i is in the 'test' split when i % TEST_EVERY == TEST_EVERY - 1
_CHUNK_ELEMENTS = 1 << 24  # values checked for NaN/Inf at a time (bounds memory for mmaps)


class ArrayDataset(FiniteDataset):
  """Rows of `x` ([N, ...]); uint8 rows are pixels, scaled to [-1, 1] as they are read.

  `rows` (indices into x, default all) selects the examples without copying a memory map.
  """

  def __init__(self, x: np.ndarray, *, labels: Optional[np.ndarray] = None,
               num_classes: Optional[int] = None, name: str = 'arrays',
               rows: Optional[np.ndarray] = None):
    num_rows = x.shape[0] if rows is None else len(rows)
    if x.ndim < 2 or num_rows == 0:
      raise ValueError(f'{name}: expected examples of shape [N, ...] with N > 0 and at least '
                       f'2 dimensions, got shape {x.shape}'
                       + ('' if rows is None else ' with no rows selected'))
    self._x = x
    self._rows = rows
    self.name = name
    self.num_examples = int(num_rows)
    self.example_shape = tuple(int(d) for d in x.shape[1:])
    self._labels = None
    self.num_classes = 0
    if labels is None and num_classes is not None:
      raise ValueError(f'{name}: num_classes={num_classes} was given but there are no labels')
    if labels is not None:
      labels = _check_labels(labels, num_examples=int(x.shape[0]), num_classes=num_classes,
                             name=name)
      self.num_classes = int(num_classes or labels.max() + 1)
      self._labels = labels if rows is None else labels[rows]

  def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    rows = self._x[indices if self._rows is None else self._rows[indices]]
    out = {'x': uint8_to_unit(rows) if rows.dtype == np.uint8 else rows.astype(np.float32)}
    if self._labels is not None:
      out['label'] = self._labels[indices]
    return out


def _check_labels(labels, *, num_examples: int, num_classes: Optional[int],
                  name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (num_examples,) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{name}: labels must be integers of shape ({num_examples},), got '
                     f'{labels.dtype} of shape {labels.shape}')
  upper = num_classes if num_classes is not None else np.iinfo(np.int32).max
  if labels.min() < 0 or labels.max() >= upper:
    raise ValueError(f'{name}: labels must lie in [0, {upper}), got range '
                     f'[{labels.min()}, {labels.max()}]')
  return labels.astype(np.int32)


def _read_file(path: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f'array file not found: {path}')
  if path.endswith('.npy'):
    return np.load(path, mmap_mode='r'), None
  if not path.endswith('.npz'):
    raise ValueError(f'expected a .npy or .npz file, got {path}')
  with np.load(path) as archive:
    keys = list(archive.keys())
    label_keys = [k for k in ('label', 'labels') if k in keys]
    data_keys = [k for k in keys if k not in label_keys]
    if 'x' in data_keys:
      x_key = 'x'
    elif len(data_keys) == 1:
      x_key = data_keys[0]
    else:
      raise ValueError(f'{path}: cannot tell which array holds the data; name it "x" '
                       f'(arrays present: {keys})')
    return archive[x_key], (archive[label_keys[0]] if label_keys else None)


def _to_nhwc(x: np.ndarray, layout: str, path: str) -> np.ndarray:
  if layout == 'auto':
    channels_first = x.shape[1] in _CHANNEL_SIZES and x.shape[3] not in _CHANNEL_SIZES
    layout = 'nchw' if channels_first else 'nhwc'
  if layout == 'nchw':
    x = np.transpose(x, (0, 2, 3, 1))
  if x.shape[3] not in _CHANNEL_SIZES:
    raise ValueError(f'{path}: images of shape {x.shape} (read as NHWC) have {x.shape[3]} '
                     f'channels; expected one of {_CHANNEL_SIZES}; pass layout="nhwc" or "nchw"')
  if x.dtype != np.uint8:
    if not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f'{path}: image arrays must be uint8 or float in [-1, 1], got {x.dtype}')
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 or hi > 1:
      raise ValueError(f'{path}: float images must lie in [-1, 1], got range [{lo}, {hi}]; '
                       'store uint8 pixels or rescale')
  return x


def _count_nonfinite(x: np.ndarray) -> int:
  """NaN/Inf values in a float array, counted in chunks of rows (a memory map stays on disk)."""
  if not np.issubdtype(x.dtype, np.inexact):
    return 0
  step = max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(x.shape[1:]))))
  return sum(int(np.count_nonzero(~np.isfinite(x[i:i + step]))) for i in range(0, len(x), step))


def split_rows(num_rows: int, split: str) -> Optional[np.ndarray]:
  """Row indices of `split` among `num_rows` (None for 'all'): every TEST_EVERY-th is 'test'."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if split == 'all':
    return None
  is_test = np.arange(num_rows) % TEST_EVERY == TEST_EVERY - 1
  return np.flatnonzero(is_test if split == 'test' else ~is_test)


def load_arrays(path: str, *, split: str = 'train', layout: str = 'auto',
                standardize: bool = False, num_classes: Optional[int] = None,
                name: Optional[str] = None) -> ArrayDataset:
  """A dataset from a .npy / .npz file (see the module docstring for the layout rules).

  Args:
    path: the .npy (memory-mapped) or .npz file.
    split: 'train' (4 of every 5 rows), 'test' (every fifth row, held out for evaluation) or
      'all'.
    layout: 'auto', 'nhwc' or 'nchw'; only used for 4-D (image) arrays.
    standardize: for non-image arrays, subtract the per-feature mean and divide by the
      per-feature std of the 'train' rows (loads the array into memory).
    num_classes: number of classes when labels are present (default: max label + 1).
    name: dataset name (default: the file name).
  """
  if layout not in _LAYOUTS:
    raise ValueError(f'layout must be one of {_LAYOUTS}, got {layout!r}')
  x, labels = _read_file(path)
  if x.ndim < 2:
    raise ValueError(f'{path}: expected an array of shape [N, ...] with at least 2 dimensions, '
                     f'got shape {x.shape}; reshape 1-D data to [N, 1]')
  rows = split_rows(x.shape[0], split)
  if rows is not None and not len(rows):
    raise ValueError(f'{path}: the {split!r} split of its {x.shape[0]} rows is empty (row i is '
                     f'held out as test when i % {TEST_EVERY} == {TEST_EVERY - 1})')
  bad = _count_nonfinite(x)
  if bad:
    raise ValueError(f'{path}: {bad} NaN/Inf values among its {x.size} values; remove or '
                     'replace them before training')
  if x.ndim == 4:
    x = _to_nhwc(x, layout, path)
  elif standardize:
    x = np.asarray(x, np.float64)
    train = x[split_rows(len(x), 'train')]
    x = ((x - train.mean(0)) / np.maximum(train.std(0), 1e-12)).astype(np.float32)
  elif x.dtype == np.uint8:
    x = x.astype(np.float32)  # integer features, not pixels: keep their values
  return ArrayDataset(x, labels=labels, num_classes=num_classes, rows=rows,
                      name=name or os.path.basename(path))
