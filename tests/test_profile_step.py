"""benchmarks/profile_step.py: it tells a convolution's three passes apart and counts the distinct
kernels of a compiled program."""

import collections
import pathlib
import subprocess
import sys

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


def test_an_unknown_config_stops_at_argument_parsing():
  """A misspelt --config ends in one usage line naming the valid choices, not a traceback."""
  script = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'profile_step.py'
  out = subprocess.run([sys.executable, str(script), '--config=edm_reference', '--out=/dev/null'],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr
  assert "error: unknown config 'edm_reference': use one of" in out.stderr
  assert 'edm_reference_32x32' in out.stderr and 'Traceback' not in out.stderr
  profile_step.check_config_name('teacher_digits:cond')  # a file of configs/ with its variant


def test_kernels_that_differ_only_in_names_count_once():
  """Element-wise updates of four leaves on two shapes: four kernels, two distinct; slices at
  four constant offsets: four distinct; at offsets passed in as arguments: one."""
  leaves = [jnp.ones(64), jnp.ones(64), jnp.ones(32), jnp.ones(32)]
  compiled = lambda f, *a: xla_cpu.jit(f).lower(*a).compile().as_text()
  update = compiled(lambda ls: [x * 1.5 + 1 for x in ls], leaves)
  assert profile_step.kernel_counts(update) == {'kernels': 4, 'distinct_kernels': 2}
  flat = jnp.ones(256)
  static = compiled(lambda ls, v: [x + v[64 * i:64 * i + 64] for i, x in enumerate(ls[:2] * 2)],
                    leaves, flat)
  assert profile_step.kernel_counts(static) == {'kernels': 4, 'distinct_kernels': 4}
  starts = tuple(jnp.int32(64 * i) for i in range(4))
  passed_in = compiled(lambda ls, v, s: [x + jax.lax.dynamic_slice_in_dim(v, o, 64)
                                         for x, o in zip(ls[:2] * 2, s)], leaves, flat, starts)
  assert profile_step.kernel_counts(passed_in) == {'kernels': 4, 'distinct_kernels': 1}
