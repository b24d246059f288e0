"""onestep_jax.nets.logistic: a sigmoid of one XLA instruction on CPU, equal to JAX's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax import xla_cpu
from onestep_jax.nets.logistic import logistic, silu


pytestmark = pytest.mark.usefixtures('fresh_xla_cpu_options')


def _inputs():
  """A wide range at activation size (so that YNNPACK's fusions take it), and the edge cases."""
  wide = np.linspace(-100.0, 100.0, 64 * 1024, dtype=np.float32).reshape(1024, 64)
  edges = np.array([0.0, -0.0, 1e-30, -1e-30, 88.7, -88.7, 1e4, -1e4, np.inf, -np.inf, np.nan],
                   np.float32)
  return jnp.asarray(wide), jnp.asarray(edges)


def _logistic_instructions(jit, program, x) -> int:
  return jit(program).lower(x).compile().as_text().count(' logistic(')


def test_compiled_with_the_library_options_it_is_one_instruction():
  wide, edges = _inputs()
  program = lambda x: silu(x) * 2.0  # noqa: E731
  assert _logistic_instructions(xla_cpu.jit, program, wide) == 1
  assert _logistic_instructions(jax.jit, program, wide) == 0  # XLA's expander on by default
  assert _logistic_instructions(xla_cpu.jit, program, edges) == 0  # small: expanded when lowered


@pytest.mark.parametrize('fusion_types', ['reduce', 'dot,reduce', 'xla_default'])
def test_without_element_wise_ynn_fusions_it_is_expanded(monkeypatch, fusion_types):
  """XLA:CPU's own emitters have no `logistic`: with any other element-wise fusions the
  program must still compile and run."""
  monkeypatch.setenv(xla_cpu.ENV, fusion_types)
  wide, _ = _inputs()
  assert _logistic_instructions(xla_cpu.jit, silu, wide) == 0
  np.testing.assert_allclose(xla_cpu.jit(silu)(wide), jax.jit(jax.nn.silu)(wide), rtol=4e-7)


@pytest.mark.parametrize('shape', [(11,), (4095,), (4096,), (2, 4, 8, 8, 16), (8, 32, 64)])
def test_compiles_and_runs_at_any_size_inside_loops_and_checkpoints(shape):
  x = jnp.linspace(-3.0, 3.0, np.prod(shape)).reshape(shape)
  def program(x):
    looped = jax.lax.fori_loop(0, 2, lambda i, c: silu(c), x)
    return jax.grad(lambda y: jax.checkpoint(lambda z: jnp.sum(silu(silu(z))))(y))(x) + looped
  def reference(x):
    looped = jax.lax.fori_loop(0, 2, lambda i, c: jax.nn.silu(c), x)
    return jax.grad(lambda y: jnp.sum(jax.nn.silu(jax.nn.silu(y))))(x) + looped
  np.testing.assert_allclose(xla_cpu.jit(program)(x), jax.jit(reference)(x), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize('compile_with_library_options', [True, False])
def test_values_equal_jax_sigmoid_to_a_few_ulps(compile_with_library_options):
  jit = xla_cpu.jit if compile_with_library_options else jax.jit
  for x in _inputs():
    got, want = jit(logistic)(x), jax.jit(jax.nn.sigmoid)(x)
    np.testing.assert_allclose(got, want, rtol=4e-7, atol=0)  # NaN where NaN, 0 and 1 exactly
    np.testing.assert_allclose(jit(silu)(x), jax.jit(jax.nn.silu)(x), rtol=4e-7, atol=0)
  np.testing.assert_array_equal(logistic(jnp.float32(0.0)), 0.5)  # eager, JAX's own


def test_derivatives_and_batching_equal_jax_silu():
  wide, _ = _inputs()
  x = wide[::16]
  grad = lambda f: xla_cpu.jit(jax.grad(lambda x: jnp.sum(f(x) ** 2)))  # noqa: E731
  np.testing.assert_allclose(grad(silu)(x), grad(jax.nn.silu)(x), rtol=2e-6, atol=1e-30)
  tangent = jnp.cos(x)
  _, jvp = xla_cpu.jit(lambda x, t: jax.jvp(silu, (x,), (t,)))(x, tangent)
  _, jvp_ref = xla_cpu.jit(lambda x, t: jax.jvp(jax.nn.silu, (x,), (t,)))(x, tangent)
  np.testing.assert_allclose(jvp, jvp_ref, rtol=2e-6, atol=1e-30)
  np.testing.assert_array_equal(jax.vmap(logistic)(x), logistic(x))
  assert jax.jit(logistic)(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16
