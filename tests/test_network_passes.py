"""benchmarks/network_passes.py: its three programs are the passes they are named after."""
import subprocess
import sys

import jax
import numpy as np

from train_helpers.scripts import ROOT, load_script

network_passes = load_script('benchmarks/network_passes.py')


def test_input_gradient_is_the_input_part_of_the_full_gradient_of_the_forward_pass():
  forward, (params, x) = network_passes.program('forward')
  input_gradient, _ = network_passes.program('input_gradient')
  full_gradient, _ = network_passes.program('full_gradient')
  y = forward(params, x)
  assert y.shape == x.shape == (network_passes.BATCH, 32, 32, 3)
  g_params, g_x = full_gradient(params, x)
  np.testing.assert_allclose(input_gradient(params, x), g_x, rtol=1e-4, atol=1e-5)
  # d sum(y^2) / dx by a finite difference along one direction, as a check of the gradient itself
  v = np.random.RandomState(1).randn(*x.shape).astype(np.float32)
  eps = 1e-2
  f = lambda t: float(np.sum(np.square(np.asarray(forward(params, x + t * v), np.float64))))  # noqa: E731
  np.testing.assert_allclose(float(np.sum(np.asarray(g_x) * v)), (f(eps) - f(-eps)) / (2 * eps),
                             rtol=2e-2)
  assert jax.tree.structure(g_params) == jax.tree.structure(params)


def test_an_unknown_pass_is_refused_before_any_process_starts():
  out = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'network_passes.py'),
                        '--passes=forward,backward'], capture_output=True, text=True)
  assert out.returncode == 2
  assert "unknown pass(es) ['backward']" in out.stderr
