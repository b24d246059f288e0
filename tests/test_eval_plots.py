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
