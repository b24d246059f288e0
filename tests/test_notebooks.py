"""The notebooks run top to bottom (smoke mode: ONESTEP_NOTEBOOK_SMOKE=1, tiny networks and
runs) and build what they show: one finite entry per divergence."""
import math
import pathlib

import numpy as np
from matplotlib.figure import Figure

from onestep_jax.losses.divergences import DIVERGENCES
from train_helpers.scripts import load_script

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / 'experiments' / 'notebooks'


def _run_notebook(name):
  execute = load_script('experiments/notebooks/execute.py')
  return execute.run_notebook(str(NOTEBOOKS / name))


def test_compare_divergences_notebook_runs_in_smoke_mode(monkeypatch):
  monkeypatch.setenv('ONESTEP_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  ns = _run_notebook('compare_divergences.ipynb')
  assert ns['SMOKE'] and ns['SAVE_DIR'] is None  # nothing written into docs/
  names = ns['DIVERGENCE_NAMES']  # a few in smoke mode; every row of the f table otherwise
  assert set(names) <= set(DIVERGENCES) and 'reverse_kl' in names and len(names) >= 2
  assert list(ns['metrics']) == names
  for name, m in ns['metrics'].items():
    assert all(math.isfinite(m[k]) for k in ('swd', 'mmd', 'energy', 'nll', 'modes')), name
    assert m['step'] == ns['NUM_STEPS'] and m['time_s'] > 0
  assert all(len(h) == ns['NUM_EVALS'] + 1 for h in ns['histories'].values())
  for name, (disc, exact, _) in ns['fields'].items():
    for xs, ys, h in (disc, exact):
      assert h.shape == (len(ys), len(xs)) and np.isfinite(h).all() and (h > 0).all(), name
  # Reverse KL weighs every sample alike, whatever the ratio.
  np.testing.assert_allclose(ns['fields']['reverse_kl'][0][2], 1.0)
  figures = ns['figures']
  assert set(figures) == {'samples', 'h_discriminator', 'h_exact', 'curves'}
  assert all(isinstance(f, Figure) for f in figures.values())
  panels = lambda fig: [ax for ax in fig.axes if ax.axison and ax.get_title()]
  assert len(panels(figures['samples'])) == len(names) + 1  # and the teacher's
  assert [ax.get_title() for ax in panels(figures['h_exact'])] == names
  curves = panels(figures['curves'])
  assert len(curves) == 5 and all(len(ax.lines) == len(names) + 1 for ax in curves)  # + teacher
