"""scikit-learn's bundled handwritten digits (1,797 images, 8×8, 10 classes; no download).

Pixels in {0..16} map linearly to [-1, 1]. The split is fixed by index: every fifth example
(index % 5 == 4) is 'test' (359 images), the rest 'train' (1,438); 'all' keeps every image.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from typing import Optional

import numpy as np

from onestep_jax.data.arrays import SPLITS, ArrayDataset, split_rows


def _bundled_csv() -> Optional[str]:
  """The path of the digits file that scikit-learn ships (`sklearn/datasets/data/digits.csv.gz`:
  64 pixels and the label per row), found without importing scikit-learn, or None."""
  spec = importlib.util.find_spec('sklearn')
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(folder, 'datasets', 'data', 'digits.csv.gz')
    if os.path.isfile(path):
      return path
  return None


def _pixels_and_labels() -> tuple[np.ndarray, np.ndarray]:
  """[1797, 8, 8] pixels in {0..16} and [1797] labels, as `sklearn.datasets.load_digits` gives
  them. Read from scikit-learn's file directly: importing scikit-learn takes about 1 s, a tenth
  of a resumed digits run; through `load_digits` if the file is not where it was."""
  path = _bundled_csv()
  if path is None:
    from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
    bunch = sk_datasets.load_digits()
    return bunch.images, bunch.target
  with gzip.open(path, 'rt') as f:
    rows = np.loadtxt(f, delimiter=',')
  return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(int)


def load_digits_dataset(*, split: str = 'train') -> ArrayDataset:
  """The digits as [N, 8, 8, 1] float32 images in [-1, 1] with int labels 0-9."""
  if split not in SPLITS:
    raise ValueError(f'digits split must be one of {SPLITS}, got {split!r}')
  pixels, labels = _pixels_and_labels()
  images = (pixels / 8.0 - 1.0).astype(np.float32)[..., None]
  return ArrayDataset(images, labels=labels, num_classes=10, name='digits',
                      rows=split_rows(len(images), split))
