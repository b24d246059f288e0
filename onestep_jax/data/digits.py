"""scikit-learn's bundled handwritten digits (1,797 images, 8×8, 10 classes; no download).

Pixels in {0..16} map linearly to [-1, 1]. The split is fixed by index: every fifth example
(index % 5 == 4) is 'test' (359 images), the rest 'train' (1,438); 'all' keeps every image.
"""
from __future__ import annotations

import numpy as np

from onestep_jax.data.arrays import SPLITS, ArrayDataset, split_rows


def load_digits_dataset(*, split: str = 'train') -> ArrayDataset:
  """The digits as [N, 8, 8, 1] float32 images in [-1, 1] with int labels 0-9."""
  if split not in SPLITS:
    raise ValueError(f'digits split must be one of {SPLITS}, got {split!r}')
  # Imported here: scikit-learn takes ~1 s to import and only this source needs it.
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  bunch = sk_datasets.load_digits()
  images = (bunch.images / 8.0 - 1.0).astype(np.float32)[..., None]
  return ArrayDataset(images, labels=bunch.target, num_classes=10, name='digits',
                      rows=split_rows(len(images), split))
