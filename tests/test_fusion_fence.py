"""onestep_jax.nets.fusion_fence: an identity, linear, that keeps a U-Net convolution out of
YNNPACK's element-wise fusions on CPU and lowers to nothing elsewhere."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax import xla_cpu
from onestep_jax.nets.edm_layers import _conv
from onestep_jax.nets.fusion_fence import fence, one_core_in_ynn
from onestep_jax.nets.logistic import silu

pytestmark = pytest.mark.usefixtures('fresh_xla_cpu_options')


def _entry_ops(program, *args) -> list[str]:
  """The opcodes of the compiled CPU program's entry computation (library options)."""
  hlo = xla_cpu.jit(program).lower(*args).compile().as_text()
  entry = hlo[hlo.index('ENTRY'):]
  entry = entry[:entry.index('\n}')]
  return re.findall(r'= \S+ ([\w-]+)\(', entry)


def _conv_inputs(cin: int, cout: int):
  rs = np.random.RandomState(0)
  return (jnp.asarray(rs.randn(4, 16, 16, cin), jnp.float32),
          jnp.asarray(rs.randn(3, 3, cin, cout) / np.sqrt(9 * cin), jnp.float32),
          jnp.asarray(rs.randn(cout), jnp.float32))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16, jnp.int32])
def test_is_the_identity_to_the_bit(dtype):
  finfo = jnp.finfo(jnp.float32)
  values = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, 1.0 + finfo.eps, -3.3, finfo.max,
                     finfo.min, np.inf, -np.inf, np.nan], np.float32)
  x = jnp.asarray(np.resize(values, 8192)).astype(dtype) if dtype != jnp.int32 else (
      jnp.arange(-4096, 4096, dtype=jnp.int32) * 524287)
  bits = lambda a: jax.lax.bitcast_convert_type(  # noqa: E731
      a, jnp.int16 if dtype == jnp.bfloat16 else jnp.int32)
  for jit in (xla_cpu.jit, jax.jit):
    y = jit(lambda x: fence(x) * 1)(x)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(bits(y), bits(x))
  np.testing.assert_array_equal(bits(fence(x)), bits(x))  # eager


def test_derivatives_transpose_and_batching_are_the_identitys():
  x = jnp.linspace(-2.0, 2.0, 64).reshape(8, 8)
  c = jnp.cos(x)
  np.testing.assert_array_equal(xla_cpu.jit(jax.grad(lambda x: jnp.sum(fence(x) * c)))(x), c)
  _, tangent = jax.jvp(fence, (x,), (c,))
  np.testing.assert_array_equal(tangent, c)
  transpose, = jax.linear_transpose(fence, x)(c)
  np.testing.assert_array_equal(transpose, c)
  np.testing.assert_array_equal(jax.vmap(fence)(x), x)
  second = jax.grad(lambda x: jnp.sum(jax.grad(lambda y: jnp.sum(fence(y) ** 3))(x)))(x)
  np.testing.assert_allclose(second, 6 * x, rtol=1e-6)


def test_on_cpu_the_fenced_convolution_leaves_the_ynnpack_fusion():
  """Unfenced, the convolution is inside a fusion; fenced, XLA runs it alone, and the program's
  values are the same up to the kernels' rounding."""
  x, w, b = _conv_inputs(32, 32)
  plain = lambda x, w, b: silu(jax.lax.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + b)
  fenced = lambda x, w, b: silu(_conv(x, w, 1) + b)  # noqa: E731
  assert 'convolution' not in _entry_ops(plain, x, w, b)
  assert 'convolution' in _entry_ops(fenced, x, w, b)
  np.testing.assert_allclose(xla_cpu.jit(fenced)(x, w, b), xla_cpu.jit(plain)(x, w, b),
                             rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x: jnp.sum(f(x, w, b) ** 2)  # noqa: E731
  np.testing.assert_allclose(xla_cpu.jit(jax.grad(loss(fenced)))(x),
                             xla_cpu.jit(jax.grad(loss(plain)))(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('cin,cout,fenced', [(32, 32, True), (32, 96, True), (96, 32, True),
                                             (32, 64, False), (64, 32, False), (64, 64, False),
                                             (3, 32, False)])
def test_conv_fences_the_shapes_ynnpack_runs_on_one_core(cin, cout, fenced):
  x, w, _ = _conv_inputs(cin, cout)
  jaxpr = str(jax.make_jaxpr(lambda x, w: _conv(x, w, 1))(x, w))
  assert jaxpr.count('onestep_jax_fusion_fence') == (2 if fenced else 0)
  one_by_one = str(jax.make_jaxpr(lambda x, w: _conv(x, w, 0))(x, w[1:2, 1:2]))
  assert 'onestep_jax_fusion_fence' not in one_by_one  # 1x1: a matrix product, not fenced


def test_rule():
  assert one_core_in_ynn(32, 32) and one_core_in_ynn(32, 96) and one_core_in_ynn(32, 160)
  assert not any(one_core_in_ynn(i, o) for i, o in [(32, 64), (96, 32), (64, 32), (64, 96),
                                                   (48, 32), (32, 48)])


def test_other_backends_lower_it_to_nothing():
  exported = jax.export.export(jax.jit(fence), platforms=['cuda', 'tpu'])(
      jax.ShapeDtypeStruct((64, 64), jnp.float32))
  text = exported.mlir_module()
  assert 'reduce_precision' not in text
  cpu = jax.export.export(jax.jit(fence), platforms=['cpu'])(
      jax.ShapeDtypeStruct((64, 64), jnp.float32)).mlir_module()
  assert 'reduce_precision' in cpu
