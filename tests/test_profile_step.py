"""benchmarks/profile_step.py: it tells a convolution's three passes apart in a compiled program."""

import collections

import jax
import jax.numpy as jnp

from onestep_jax import xla_cpu
from train_helpers.scripts import load_script

profile_step = load_script('benchmarks/profile_step.py')


def test_forward_input_and_filter_gradients_of_a_convolution_are_classified_apart():
  """A 3x3 convolution at 16x16 differentiated in its input and its kernel: one convolution of
  each kind, and the loss's reduction, in the program the library compiles."""
  x = jnp.ones((2, 16, 16, 8))
  w = jnp.ones((3, 3, 8, 8))

  def loss(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)],
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(jnp.sin(y))

  hlo = xla_cpu.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
  kinds = collections.Counter(profile_step.classify(hlo).values())
  for kind in ('conv forward', 'conv backward-input', 'conv backward-filter'):
    assert kinds[kind] >= 1, kinds
  assert kinds['reduction (norms, softmax, sums)'] >= 1, kinds
