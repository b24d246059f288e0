"""Fashion-MNIST (28×28×1, 10 classes) from IDX files, gzipped or raw, in any directory.

By default the files come from Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist`), which installs
/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

from onestep_jax.data.arrays import ArrayDataset

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
DEBIAN_PACKAGE = 'dataset-fashion-mnist'
SPLITS = {'train': 'train', 'test': 't10k'}
# IDX type codes (third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


def read_idx(path: str) -> np.ndarray:
  """The array stored in an IDX file (gzip-compressed or raw, detected from its first bytes)."""
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] == b'\x1f\x8b':
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[:2] != b'\x00\x00' or raw[2] not in _IDX_DTYPES:
    raise ValueError(f'{path} is not an IDX file (bad magic number {raw[:4]!r})')
  dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
  header = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(raw[4:header], '>u4'))
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(raw) != expected:
    raise ValueError(f'{path}: IDX header promises shape {shape} ({expected} bytes) but the '
                     f'file holds {len(raw)} bytes')
  return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder('='))


def _find(data_dir: str, stem: str) -> str:
  for candidate in (stem + '.gz', stem):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f'Fashion-MNIST file {stem}[.gz] not found in directory {data_dir}; install the Debian '
      f'package ({DEBIAN_PACKAGE}: apt-get install {DEBIAN_PACKAGE}, files in {DEBIAN_DIR}) or '
      'pass data_dir= pointing at the IDX files')


def load_fashion_mnist(*, split: str = 'train', data_dir: str = DEBIAN_DIR) -> ArrayDataset:
  """Fashion-MNIST `split` ('train': 60,000, 'test': 10,000) as uint8 [N, 28, 28, 1] rows."""
  if split not in SPLITS:
    raise ValueError(f'Fashion-MNIST split must be one of {sorted(SPLITS)}, got {split!r}')
  prefix = SPLITS[split]
  images = read_idx(_find(data_dir, f'{prefix}-images-idx3-ubyte'))
  labels = read_idx(_find(data_dir, f'{prefix}-labels-idx1-ubyte'))
  if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
    raise ValueError(f'{data_dir}: expected uint8 images [N, H, W] and N labels, got images '
                     f'{images.dtype}{images.shape} and labels {labels.shape}')
  return ArrayDataset(images[..., None], labels=labels, num_classes=10, name='fashion_mnist')
