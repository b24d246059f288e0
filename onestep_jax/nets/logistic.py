"""A sigmoid that reaches XLA:CPU as one `logistic` instruction, and the SiLU built on it (issue 6).

JAX lowers `lax.logistic` to 1 / (1 + exp(-x)) on every backend. In XLA:CPU's element-wise
YNNPACK fusions the constant 1 then becomes a broadcast at activation size, and where several
fusions share one such broadcast XLA writes it out to memory: 9 of the 21 broadcasts that the
reference U-Net's gradient program wrote out (docs/RESULTS.md, "A sigmoid of one instruction").
`logistic` here lowers to StableHLO's `logistic` on CPU, which YNNPACK evaluates as a sigmoid of
its own once XLA's `logistic-expander` pass is off (`onestep_jax.xla_cpu`, the library's default;
with the pass on, XLA expands it back to the form above). Other backends get JAX's own lowering.
Values agree with `jax.nn.sigmoid` to a few float32 ulps; the derivative is JAX's,
y * logistic(-x).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.extend.mlir.dialects import stablehlo
from jax.interpreters import ad, batching, mlir

logistic_p = Primitive('onestep_jax_logistic')
logistic_p.def_impl(jax.lax.logistic)
logistic_p.def_abstract_eval(lambda x: x)
batching.defvectorized(logistic_p)
ad.defjvp2(logistic_p, lambda g, y, x: g * (y * logistic_p.bind(-x)))
_expanded = mlir.lower_fun(jax.lax.logistic, multiple_results=False)
# YNNPACK takes element-wise work of at least this many elements in these types; XLA:CPU's own
# emitters have no `logistic`, so smaller or other arrays keep the expanded form.
MIN_ELEMENTS = 4096
NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(jnp.bfloat16))


def _cpu_lowering(ctx, x):
  aval, = ctx.avals_in
  if aval.size >= MIN_ELEMENTS and aval.dtype in NATIVE_DTYPES:
    return [stablehlo.logistic(x)]
  return _expanded(ctx, x)


mlir.register_lowering(logistic_p, _expanded)
mlir.register_lowering(logistic_p, _cpu_lowering, platform='cpu')


def logistic(x: jax.Array) -> jax.Array:
  """1 / (1 + exp(-x)), as one instruction on CPU (see the module's docstring)."""
  return logistic_p.bind(x)


def silu(x: jax.Array) -> jax.Array:
  """x * sigmoid(x), with the sigmoid of `logistic`."""
  return x * logistic(x)
