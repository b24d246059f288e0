"""PNG pictures: image grids of samples (PIL), 2-D scatter plots and training curves (matplotlib,
Agg, no display).

All write atomically (temporary file, then rename), so a reader never sees a partial PNG.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from PIL import Image

from onestep_jax.atomic import atomic_path


def image_grid(images, *, ncols: Optional[int] = None, padding: int = 1,
               pad_value: float = 1.0) -> np.ndarray:
  """Tiles NHWC images in [-1, 1] (C = 1 or 3) into one uint8 [H', W', C] array.

  `ncols` defaults to ceil(sqrt(N)); `padding` pixels of `pad_value` (in [-1, 1]) separate
  tiles. Values outside [-1, 1] are clipped.
  """
  x = np.asarray(images, np.float32)
  if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] == 0:
    raise ValueError(f'images must have shape [N, H, W, C] with N >= 1 and C in (1, 3), got '
                     f'shape {x.shape}')
  if padding < 0:
    raise ValueError(f'padding must be non-negative, got {padding}')
  n, h, w, c = x.shape
  ncols = ncols or math.ceil(math.sqrt(n))
  nrows = math.ceil(n / ncols)
  grid = np.full((nrows * (h + padding) + padding, ncols * (w + padding) + padding, c),
                 pad_value, np.float32)
  for i in range(n):
    r, col = divmod(i, ncols)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = x[i]
  grid = np.nan_to_num(grid, nan=-1.0)
  return np.round((np.clip(grid, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def save_image_grid(images, path: str, *, ncols: Optional[int] = None, padding: int = 1,
                    min_size: int = 256) -> None:
  """Writes `image_grid(images)` as a PNG, upscaled (nearest) until its long side is >= min_size."""
  grid = image_grid(images, ncols=ncols, padding=padding)
  scale = max(1, math.ceil(min_size / max(grid.shape[:2])))
  img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  with atomic_path(path) as tmp:
    img.save(tmp, format='PNG')


def save_scatter(samples, path: str, *, reference=None, means=None, title: Optional[str] = None,
                 max_points: int = 5000, size_inches: float = 5.0, dpi: int = 100) -> None:
  """Writes a PNG scatter of 2-D `samples` [N, 2], over `reference` [M, 2] and mixture `means`.

  At most `max_points` of each set are drawn (the first ones). Axes are equal and share the
  limits of all drawn points, so samples and reference are directly comparable.
  """
  # Imported here: matplotlib is only needed when plotting. The Figure/Agg canvas pair needs no
  # pyplot state and no display.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  sets = {'samples': samples, 'reference': reference, 'means': means}
  arrays = {}
  for name, value in sets.items():
    if value is None:
      continue
    a = np.asarray(value, np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
      raise ValueError(f'{name} must have shape [N, 2] for a 2-D scatter, got shape {a.shape}')
    arrays[name] = a[:max_points]
  fig = Figure(figsize=(size_inches, size_inches), dpi=dpi)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  if 'reference' in arrays:
    r = arrays['reference']
    ax.scatter(r[:, 0], r[:, 1], s=3, c='tab:gray', alpha=0.35, linewidths=0, label='reference')
  s = arrays['samples']
  ax.scatter(s[:, 0], s[:, 1], s=3, c='tab:blue', alpha=0.6, linewidths=0, label='samples')
  if 'means' in arrays:
    m = arrays['means']
    ax.scatter(m[:, 0], m[:, 1], s=60, c='tab:red', marker='x', linewidths=2, label='modes')
  ax.set_aspect('equal', adjustable='datalim')
  ax.legend(loc='upper right', fontsize=8, markerscale=2)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, format='png')


def save_training_curves(records, path: str, *, width_inches: float = 4.5,
                         height_inches: float = 3.0, dpi: int = 100) -> None:
  """Writes a PNG of training curves from metrics.jsonl records against their 'step'.

  One column per phase (the '<phase>/' prefix of '<phase>/loss'): its loss on top, the
  gradient norm of each group it updates ('<phase>/grad_norm/<group>') below, each on a log
  axis when all its values are positive. Non-finite values are left out of the lines.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  phases = sorted({k[:-len('/loss')] for r in records for k in r if k.endswith('/loss')
                   and k.count('/') == 1})
  if not phases:
    raise ValueError('no "<phase>/loss" values in the training records to plot')
  fig = Figure(figsize=(width_inches * len(phases), 2 * height_inches), dpi=dpi)
  FigureCanvasAgg(fig)
  axes = fig.subplots(2, len(phases), squeeze=False, sharex=True)
  for col, phase in enumerate(phases):
    norms = sorted({k for r in records for k in r if k.startswith(f'{phase}/grad_norm/')})
    for ax, keys, title in ((axes[0, col], [f'{phase}/loss'], f'{phase}: loss'),
                            (axes[1, col], norms, f'{phase}: gradient norm')):
      positive = True
      for key in keys:
        points = np.array([(r['step'], r[key]) for r in records if key in r], np.float64)
        points = points[np.isfinite(points[:, 1])] if len(points) else points.reshape(0, 2)
        positive &= bool(np.all(points[:, 1] > 0))
        ax.plot(points[:, 0], points[:, 1], lw=1.2, label=key.rsplit('/', 1)[-1])
      if positive and keys:
        ax.set_yscale('log')
      if keys is norms and norms:
        ax.legend(fontsize=8, title='group', title_fontsize=8)
      ax.set_title(title, fontsize=10)
      ax.grid(alpha=0.3, which='both')
    axes[1, col].set_xlabel('step')
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, format='png')
