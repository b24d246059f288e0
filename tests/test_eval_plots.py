"""Image grids and scatter plots: pixel layout, atomic PNG writes, shape errors."""
import os

import numpy as np
import pytest
from PIL import Image

from onestep_jax.eval import plots


def test_image_grid_layout_and_value_mapping():
  x = np.stack([np.full((2, 3, 1), v, np.float32) for v in (-1.0, 0.0, 1.0, 2.0, -5.0)])
  grid = plots.image_grid(x, ncols=2, padding=1, pad_value=-1.0)
  assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 1) and grid.dtype == np.uint8
  # Tile (row 0, col 1) holds image 1 (0.0 -> 128); image 3 (2.0) clips to 255; padding is 0.
  assert (grid[1:3, 5:8] == 128).all() and (grid[4:6, 5:8] == 255).all()
  assert (grid[0] == 0).all() and (grid[:, 4] == 0).all()
  # The unused last tile stays at the pad value.
  assert (grid[7:9, 5:8] == 0).all()


def test_save_image_grid_writes_a_png_atomically(tmp_path):
  rs = np.random.RandomState(0)
  path = tmp_path / 'grid.png'
  plots.save_image_grid(rs.uniform(-1, 1, (10, 8, 8, 3)), str(path), min_size=100)
  assert os.listdir(tmp_path) == ['grid.png']
  img = Image.open(path)
  assert img.mode == 'RGB' and max(img.size) >= 100
  plots.save_image_grid(rs.uniform(-1, 1, (4, 8, 8, 1)), str(path))
  assert Image.open(path).mode == 'L' and os.listdir(tmp_path) == ['grid.png']


def test_save_scatter_writes_a_png(tmp_path):
  rs = np.random.RandomState(1)
  path = tmp_path / 'scatter.png'
  plots.save_scatter(rs.randn(300, 2), str(path), reference=rs.randn(500, 2) + 1,
                     means=np.eye(2), title='samples')
  img = np.asarray(Image.open(path).convert('RGB'))
  assert img.shape == (500, 500, 3) and img.std() > 0
  assert os.listdir(tmp_path) == ['scatter.png']


def test_failed_write_leaves_no_file(tmp_path):
  with pytest.raises(ValueError, match=r'reference must have shape \[N, 2\]'):
    plots.save_scatter(np.zeros((3, 2)), str(tmp_path / 'x.png'), reference=np.zeros((3, 3)))
  with pytest.raises(ValueError, match=r'images must have shape \[N, H, W, C\]'):
    plots.save_image_grid(np.zeros((2, 8, 8, 2)), str(tmp_path / 'g.png'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    plots.save_image_grid(np.zeros((2, 8, 8, 1)), str(tmp_path / 'no_dir' / 'g.png'))
  assert os.listdir(tmp_path) == []


def test_noised_sample_log_density_is_the_gaussian_kernel_mean():
  """Samples all at one point give exactly the Gaussian density there; many draws of N(0, s^2 I)
  give N(0, (s^2 + sigma^2) I), the noised distribution."""
  x = np.random.RandomState(0).normal(size=(50, 2))
  mu, sigma = np.array([0.3, -0.5]), 0.7
  exact = -np.sum((x - mu)**2, 1) / (2 * sigma**2) - np.log(2 * np.pi * sigma**2)
  got = plots.noised_sample_log_density(x, np.tile(mu, (7, 1)), sigma, chunk=16)
  np.testing.assert_allclose(got, exact, rtol=1e-10)
  s, var = 0.5, 0.5**2 + sigma**2
  draws = s * np.random.RandomState(1).normal(size=(40_000, 2))
  x = x[np.sum(x**2, 1) < 2.0]
  noised = -np.sum(x**2, 1) / (2 * var) - np.log(2 * np.pi * var)
  np.testing.assert_allclose(plots.noised_sample_log_density(x, draws, sigma), noised, atol=0.03)
  with pytest.raises(ValueError, match='sigma > 0'):
    plots.noised_sample_log_density(x, draws, 0.0)


def test_h_over_plane_layout_clipping_and_normalisation():
  # log r = the x coordinate: forward KL's h = r grows along the columns, constant down them.
  xs, ys, h = plots.h_over_plane(lambda p: p[:, 0], divergence='forward_kl', extent=1.0,
                                 resolution=5)
  np.testing.assert_allclose(xs, np.linspace(-1, 1, 5))
  np.testing.assert_allclose(h, np.tile(np.exp(xs), (5, 1)), rtol=1e-6)
  _, _, h = plots.h_over_plane(lambda p: 3 * p[:, 0], divergence='forward_kl', extent=1.0,
                               resolution=5, ratio_range=(0.5, 2.0))
  assert h.min() == pytest.approx(0.5) and h.max() == pytest.approx(2.0)
  # Reverse KL weighs everything alike; a constant ratio gives weight 1 after normalisation.
  at = np.random.RandomState(0).normal(size=(100, 2))
  _, _, h = plots.h_over_plane(lambda p: p[:, 0] * p[:, 1], divergence='reverse_kl',
                               extent=1.0, resolution=4, normalize_over=at)
  np.testing.assert_array_equal(h, np.ones((4, 4)))
  for name in ('jensen_shannon', 'neyman_chi2', 'pearson_chi2'):
    _, _, h = plots.h_over_plane(lambda p: np.full(len(p), 2.3), divergence=name, extent=1.0,
                                 resolution=4, normalize_over=at)
    np.testing.assert_allclose(h, 1.0, rtol=1e-6)
  # Normalised, the mean of h over the normalising points is 1 (here on the grid itself).
  xs, ys, _ = plots.h_over_plane(lambda p: p[:, 0], divergence='jeffreys', extent=1.0,
                                 resolution=6)
  grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
  _, _, h = plots.h_over_plane(lambda p: p[:, 0], divergence='jeffreys', extent=1.0,
                               resolution=6, normalize_over=grid)
  assert np.mean(h) == pytest.approx(1.0)


def test_comparison_figures_have_one_panel_per_entry(tmp_path):
  rs = np.random.RandomState(0)
  fig = plots.sample_panels({f'm{i}': rs.normal(size=(30, 2)) for i in range(5)},
                            reference=rs.normal(size=(40, 2)), means=np.zeros((2, 2)), ncols=3)
  assert sum(ax.get_visible() and ax.axison for ax in fig.axes) == 5
  grid = np.linspace(-1, 1, 4)
  fields = {'const': (grid, grid, np.ones((4, 4))), 'ramp': (grid, grid, np.exp(rs.normal(
      size=(4, 4))))}
  fig = plots.field_panels(fields, points=rs.normal(size=(10, 2)), ncols=2)
  assert len(fig.axes) == 4  # two maps and their colour bars
  history = [{'time_s': t, 'swd': 1.0 / (1 + t), 'nll': 2.0} for t in range(3)]
  fig = plots.metric_curves({'a': history, 'b': history}, metrics=('swd', 'nll'),
                            reference={'swd': 0.2}, log_metrics=('swd',))
  assert [len(ax.lines) for ax in fig.axes] == [3, 2]
  path = tmp_path / 'curves.png'
  plots.save_figure(fig, str(path))
  assert Image.open(path).format == 'PNG' and os.listdir(tmp_path) == ['curves.png']
