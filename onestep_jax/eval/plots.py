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
  gradient norm of each group it updates ('<phase>/grad_norm/<group>', the logged update's) below,
  with the largest norm since the previous record dashed ('<phase>/grad_norm_max/<group>'), each
  on a log axis when all its values are positive. Non-finite values are left out of the lines.
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
        lines = [(key, '-', '')]
        window_max = key.replace('/grad_norm/', '/grad_norm_max/')
        if window_max != key and any(window_max in r for r in records):
          lines.append((window_max, '--', ' (window max)'))
        line = None
        for k, style, suffix in lines:
          points = np.array([(r['step'], r[k]) for r in records if k in r], np.float64)
          points = points[np.isfinite(points[:, 1])] if len(points) else points.reshape(0, 2)
          positive &= bool(np.all(points[:, 1] > 0))
          line, = ax.plot(points[:, 0], points[:, 1], style, lw=1.2,
                          color=None if line is None else line.get_color(),
                          label=key.rsplit('/', 1)[-1] + suffix)
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


def save_evaluation_curves(records, path: str, *, width_inches: float = 4.0,
                           height_inches: float = 3.0, dpi: int = 100) -> None:
  """Writes a PNG of the evaluations made during training ('eval/<model>/<metric>@<nfe>' values
  of metrics.jsonl records) against their 'step': one panel per metric, one line per model and
  NFE, on a log axis when all the metric's values are positive. Non-finite values are left out."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  keys = sorted({k for r in records for k in r if k.startswith('eval/') and k.count('/') == 2})
  if not keys:
    raise ValueError('no "eval/<model>/<metric>@<nfe>" values in the training records to plot')
  parts = {k: (k.split('/')[1], *k.split('/')[2].rsplit('@', 1)) for k in keys}  # model, metric, nfe
  metrics = sorted({metric for _, metric, _ in parts.values()})
  cols = min(4, len(metrics))
  rows = -(-len(metrics) // cols)
  fig = Figure(figsize=(width_inches * cols, height_inches * rows), dpi=dpi)
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax, metric in zip(axes.flat, metrics):
    positive = True
    for key in (k for k in keys if parts[k][1] == metric):
      points = np.array([(r['step'], r[key]) for r in records if key in r], np.float64)
      points = points[np.isfinite(points[:, 1])]
      positive &= bool(np.all(points[:, 1] > 0))
      model, _, nfe = parts[key]
      ax.plot(points[:, 0], points[:, 1], 'o-', lw=1.2, ms=3, label=f'{model}, NFE {nfe}')
    if positive:
      ax.set_yscale('log')
    ax.set_title(metric, fontsize=10)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
  for ax in axes.flat[len(metrics):]:
    ax.set_visible(False)
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, format='png')


# Side-by-side panels for comparing models on 2-D data (experiments/notebooks/
# compare_divergences.ipynb). Each returns a matplotlib Figure (Agg canvas, no pyplot state);
# `save_figure` writes it.


def noised_sample_log_density(points, samples, sigma: float, *, chunk: int = 1024) -> np.ndarray:
  """log q_sigma at `points` [N, D], where q_sigma is the distribution of `samples` [M, D] plus
  N(0, sigma^2 I) noise: log of the mean Gaussian kernel (sigma) at the samples, [N].

  Its exponential is an unbiased estimate of the density of any q convolved with the noise when
  the samples are draws of q (exact for their empirical distribution): with q a one-step
  generator, the noised student density that a diffusion-distillation loss sees at sigma.
  """
  from scipy.special import logsumexp  # pylint: disable=g-import-not-at-top

  x = np.asarray(points, np.float64)
  s = np.asarray(samples, np.float64)
  if x.ndim != 2 or s.ndim != 2 or x.shape[1] != s.shape[1] or sigma <= 0:
    raise ValueError(f'need points [N, D], samples [M, D] and sigma > 0, got shapes {x.shape}, '
                     f'{s.shape} and sigma {sigma}')
  d = x.shape[1]
  const = math.log(len(s)) + 0.5 * d * math.log(2 * math.pi * sigma**2)
  out = [logsumexp(-0.5 * np.sum((x[i:i + chunk, None] - s[None])**2, -1) / sigma**2, axis=1)
         for i in range(0, len(x), chunk)]
  return np.concatenate(out) - const


def h_over_plane(log_ratio_fn, *, divergence: str, extent: float, resolution: int = 100,
                 ratio_range=None, normalize_over=None):
  """The weighting h(r) = f''(r) r^2 of an f-divergence over the square [-extent, extent]^2.

  f-distill (Xu et al. 2025, arXiv 2502.15681, Thm. 1) and Uni-Instruct (arXiv 2505.20755,
  Thm. 3.1) weigh a noised student sample at x by h(r(x)), r = p_teacher / q_student at one noise
  level. `log_ratio_fn(points [N, 2]) -> log r [N]` is e.g. a trained discriminator's logits or
  a log ratio of two densities. `ratio_range` clips r as f-distill does. With `normalize_over`
  (points [M, 2], noised student samples at the same noise level), r is divided by its mean over
  them and then h by its mean over them, f-distill's two normalisations (Sec. 4.2): h = 2 at x
  means a student sample there weighs twice the average one.

  Returns (xs [R], ys [R], h [R, R]) with h[i, j] at (xs[j], ys[i]).
  """
  from onestep_jax.losses.divergences import get_divergence  # pylint: disable=g-import-not-at-top

  h_fn = get_divergence(divergence).h
  xs = ys = np.linspace(-extent, extent, resolution)
  grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
  points = grid if normalize_over is None else np.concatenate([grid, normalize_over])
  log_r = np.asarray(log_ratio_fn(points), np.float64).reshape(-1)
  if ratio_range is not None:
    log_r = np.clip(log_r, math.log(ratio_range[0]), math.log(ratio_range[1]))
  r = np.exp(log_r)
  n = len(grid)
  if normalize_over is not None:
    r = r / np.mean(r[n:])
  h = np.asarray(h_fn(r), np.float64)
  if normalize_over is not None:
    h = h / np.mean(h[n:])
  return xs, ys, h[:n].reshape(resolution, resolution)


def _panel_figure(num: int, *, ncols: int, size: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  ncols = min(ncols, num)
  nrows = math.ceil(num / ncols)
  fig = Figure(figsize=(size * ncols, size * nrows), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
  for ax in axes[num:]:
    ax.axis('off')
  return fig, axes[:num]


def sample_panels(panels, *, reference=None, means=None, extent: Optional[float] = None,
                  ncols: int = 5, size: float = 2.6, max_points: int = 2000):
  """A grid of 2-D scatter plots, one per `panels` entry (title -> samples [N, 2]), each over
  the same `reference` points [M, 2] (grey) and mixture `means` (red x), on shared axes
  ([-extent, extent]^2, or the reference's range)."""
  if extent is None:
    base = reference if reference is not None else np.concatenate(list(panels.values()))
    extent = 1.15 * float(np.max(np.abs(base)))
  fig, axes = _panel_figure(len(panels), ncols=ncols, size=size)
  for ax, (title, x) in zip(axes, panels.items()):
    x = np.asarray(x)[:max_points]
    if reference is not None:
      r = np.asarray(reference)[:max_points]
      ax.scatter(r[:, 0], r[:, 1], s=2, c='tab:gray', alpha=0.3, linewidths=0)
    ax.scatter(x[:, 0], x[:, 1], s=2, c='tab:blue', alpha=0.6, linewidths=0)
    if means is not None:
      ax.scatter(means[:, 0], means[:, 1], s=30, c='tab:red', marker='x', linewidths=1.5)
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), aspect='equal', xticks=[], yticks=[])
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return fig


def field_panels(fields, *, points=None, means=None, ncols: int = 5, size: float = 2.6,
                 log: bool = True, label: str = ''):
  """A grid of heat maps, one per `fields` entry (title -> (xs, ys, values [R, R]) as
  `h_over_plane` returns), each with its own colour bar (log scale when `log`), under optional
  `points` [N, 2] (black dots) and `means` (white x)."""
  from matplotlib.colors import LogNorm  # pylint: disable=g-import-not-at-top

  fig, axes = _panel_figure(len(fields), ncols=ncols, size=size)
  for ax, (title, (xs, ys, v)) in zip(axes, fields.items()):
    v = np.asarray(v, np.float64)
    finite = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 1.0)
    if hi <= lo:  # a constant field (e.g. reverse KL's h = 1)
      lo, hi = (lo / 2, hi * 2) if log else (lo - 1, hi + 1)
    norm = LogNorm(lo, hi) if log else None
    im = ax.pcolormesh(xs, ys, v, norm=norm, vmin=None if log else lo, vmax=None if log else hi,
                       cmap='viridis', shading='auto')
    if points is not None:
      p = np.asarray(points)
      ax.scatter(p[:, 0], p[:, 1], s=1, c='k', alpha=0.25, linewidths=0)
    if means is not None:
      ax.scatter(means[:, 0], means[:, 1], s=25, c='w', marker='x', linewidths=1.2)
    ax.set(aspect='equal', xticks=[], yticks=[], xlim=(xs[0], xs[-1]), ylim=(ys[0], ys[-1]))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label=label)
  fig.tight_layout()
  return fig


def metric_curves(histories, *, metrics, x: str = 'time_s', reference=None, log_metrics=(),
                  size: float = 3.2):
  """One panel per metric, one line per `histories` entry (name -> list of records, dicts with
  `x` and the metrics), and a dashed black line at `reference[metric]` (e.g. the teacher's).
  Metrics in `log_metrics` get a log axis."""
  fig, axes = _panel_figure(len(metrics), ncols=len(metrics), size=size)
  for ax, metric in zip(axes, metrics):
    for name, records in histories.items():
      pts = np.array([(r[x], r[metric]) for r in records], np.float64)
      ax.plot(pts[:, 0], pts[:, 1], marker='.', lw=1.2, label=name)
    if reference is not None and metric in reference:
      ax.axhline(reference[metric], color='k', ls='--', lw=1, label='teacher')
    if metric in log_metrics:
      ax.set_yscale('log')
    ax.set(xlabel=x, title=metric)
    ax.grid(alpha=0.3, which='both')
  axes[-1].legend(fontsize=7, loc='center left', bbox_to_anchor=(1.02, 0.5))
  fig.tight_layout()
  return fig


def save_figure(fig, path: str, *, dpi: int = 100) -> None:
  """Writes a matplotlib figure as a PNG, atomically."""
  with atomic_path(path) as tmp:
    fig.savefig(tmp, format='png', dpi=dpi, bbox_inches='tight')
