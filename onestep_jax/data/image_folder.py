"""A directory of PNG / JPEG files, decoded lazily by index with PIL.

Either the images sit directly in the directory (unlabelled), or in one sub-directory per class
(labels = sorted sub-directory names, `class_names`). Each image is converted to grayscale or RGB,
its shorter side resized to `resolution` and the central square kept.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
from PIL import Image

from onestep_jax.data.base import FiniteDataset
from onestep_jax.data.images import prepare_image, uint8_to_unit

EXTENSIONS = ('.png', '.jpg', '.jpeg')


def _images_in(directory: str) -> list[str]:
  return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                if f.lower().endswith(EXTENSIONS) and os.path.isfile(os.path.join(directory, f)))


class ImageFolderDataset(FiniteDataset):
  """Images under `path`, as float32 [resolution, resolution, channels] in [-1, 1].

  Args:
    path: the directory.
    resolution: output height and width.
    channels: 3 (RGB) or 1 (grayscale).
    class_subfolders: True to label images by sub-directory, False to read only the files in
      `path`; None (default) picks True exactly when `path` holds no image files itself.
  """

  def __init__(self, path: str, *, resolution: int, channels: int = 3,
               class_subfolders: Optional[bool] = None):
    if not os.path.isdir(path):
      raise FileNotFoundError(f'image folder not found: {path}')
    if channels not in (1, 3):
      raise ValueError(f'channels must be 1 or 3, got {channels}')
    if resolution < 1:
      raise ValueError(f'resolution must be positive, got {resolution}')
    top_level = _images_in(path)
    if class_subfolders is None:
      class_subfolders = not top_level
    self.class_names: tuple[str, ...] = ()
    labels = []
    if class_subfolders:
      self.class_names = tuple(sorted(d for d in os.listdir(path)
                                      if os.path.isdir(os.path.join(path, d))))
      self._files = []
      for label, cls in enumerate(self.class_names):
        files = _images_in(os.path.join(path, cls))
        self._files += files
        labels += [label] * len(files)
    else:
      self._files = top_level
    if not self._files:
      raise ValueError(f'no {"/".join(EXTENSIONS)} images found in {path}'
                       + (' or its sub-directories' if class_subfolders else ''))
    self._labels = np.asarray(labels, np.int32) if class_subfolders else None
    self._resolution = resolution
    self._channels = channels
    self.name = os.path.basename(os.path.normpath(path))
    self.example_shape = (resolution, resolution, channels)
    self.num_examples = len(self._files)
    self.num_classes = len(self.class_names)

  def _load(self, index: int) -> np.ndarray:
    with Image.open(self._files[index]) as image:
      return prepare_image(image, channels=self._channels, resolution=self._resolution)

  def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    out = {'x': uint8_to_unit(np.stack([self._load(int(i)) for i in indices]))}
    if self._labels is not None:
      out['label'] = self._labels[indices]
    return out
