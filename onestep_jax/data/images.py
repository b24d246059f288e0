"""Image helpers shared by the image sources: pixel scaling and PIL resize + centre crop."""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

_MODES = {1: 'L', 3: 'RGB'}


def uint8_to_unit(pixels: np.ndarray) -> np.ndarray:
  """Map uint8 pixels {0..255} linearly onto [-1, 1] as float32."""
  return np.asarray(pixels, np.float32) / 127.5 - 1.0


def resize_center_crop(image: Image.Image, resolution: int) -> Image.Image:
  """Scale the shorter side to `resolution` (bicubic), then crop the central square."""
  w, h = image.size
  scale = resolution / min(w, h)
  new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
  left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
  return image.crop((left, top, left + resolution, top + resolution))


def prepare_image(image: Image.Image, *, channels: int,
                  resolution: Optional[int] = None) -> np.ndarray:
  """uint8 [H, W, channels]: grayscale (1) or RGB (3), resized + centre-cropped if asked."""
  if channels not in _MODES:
    raise ValueError(f'channels must be one of {sorted(_MODES)}, got {channels}')
  image = image.convert(_MODES[channels])
  if resolution is not None:
    image = resize_center_crop(image, resolution)
  return np.asarray(image, np.uint8).reshape(image.size[1], image.size[0], channels)
