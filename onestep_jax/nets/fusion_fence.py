"""An identity that keeps XLA:CPU from fusing across it, for the convolutions that YNNPACK runs on
one core only (issue 7).

With the library's CPU options (`onestep_jax.xla_cpu`) YNNPACK takes a convolution into the
element-wise fusion around it. For a 3x3 convolution with 32 input channels and an odd multiple
of 32 output channels (32 -> 32, 32 -> 96), such a fusion does not use the second core: 32 -> 32
plus bias took 2.4-2.5 ms on one core and 2.4-2.6 ms on two, while the convolution alone, which
XLA then runs itself, took 2.9-3.1 ms on one core and 1.5-1.7 ms on two; 32 -> 48 or 32 -> 64
fusions run 1.7-1.9 times as fast on two cores (`python benchmarks/conv_threads.py`, two runs in
benchmarks/results/conv_threads*.json; docs/RESULTS.md, "Which convolutions use the second
core"). The reference U-Net has such convolutions at 32x32, forward and transposed
(the input gradient of a 96 -> 32 convolution is a 32 -> 96 one).

`fence(x)` is x. On CPU it lowers a float32 operand to StableHLO's `reduce_precision` to
float32's own exponent and mantissa widths, which changes no bit and which YNNPACK does not
fuse, so a fenced convolution stays out of YNNPACK's fusions and runs in XLA's own kernels on
every core, and so does its transpose (the fence's transpose is a fence). Other dtypes and
backends lower it to nothing. Should a later XLA drop the no-op, or YNNPACK learn to fuse it,
the fence only stops having an effect.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.extend.mlir.dialects import stablehlo
from jax.interpreters import ad, batching, mlir

fence_p = Primitive('onestep_jax_fusion_fence')
fence_p.def_impl(lambda x: x)
fence_p.def_abstract_eval(lambda x: x)
batching.defvectorized(fence_p)
ad.deflinear2(fence_p, lambda ct, x: [fence_p.bind(ct)])
mlir.register_lowering(fence_p, lambda ctx, x: [x])


def _cpu_lowering(ctx, x):
  aval, = ctx.avals_in
  if aval.dtype != jnp.float32:  # measured for float32 only; XLA:CPU rounds a bfloat16
    return [x]                   # reduce_precision in float32, flushing bfloat16's subnormals
  return [stablehlo.reduce_precision(x, 8, 23)]


mlir.register_lowering(fence_p, _cpu_lowering, platform='cpu')


def fence(x: jax.Array) -> jax.Array:
  """x, with no XLA:CPU fusion across it (see the module's docstring)."""
  return fence_p.bind(x)


def one_core_in_ynn(in_channels: int, out_channels: int) -> bool:
  """Whether YNNPACK's fusion of a 3x3 convolution from `in_channels` to `out_channels` with the
  element-wise work after it runs on one core (jaxlib 0.10.2 on a 2-core Intel Xeon with
  AVX-512: benchmarks/conv_threads.py)."""
  return in_channels == 32 and out_channels % 64 == 32
