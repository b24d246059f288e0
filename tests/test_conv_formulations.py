"""benchmarks/conv_formulations.py: its matrix-product convolutions compute XLA's convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_helpers.scripts import load_script

conv_formulations = load_script('benchmarks/conv_formulations.py')


@pytest.mark.parametrize('op, name', [(op, name) for op, v in
                                      conv_formulations.FORMULATIONS.items() for name in v])
def test_every_formulation_matches_the_gradient_or_output_of_xlas_convolution(op, name):
  """Forward: the convolution; filter gradient: d sum(conv(x, w) * dy) / dw by autodiff."""
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k1, (2, 6, 5, 4))
  w = jax.random.normal(k2, (3, 3, 4, 7))
  dy = jax.random.normal(k3, (2, 6, 5, 7))
  conv = lambda w: jax.lax.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  expected = conv(w) if op == 'forward' else jax.grad(lambda w: jnp.sum(conv(w) * dy))(w)
  got = conv_formulations.FORMULATIONS[op][name](x, w, dy)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

