"""The compile options of this library's CPU programs (issue 6): YNNPACK's share, LLVM's effort.

jaxlib 0.10's CPU compiler sends every convolution, every standalone matrix product and the
reductions to its YNNPACK kernels (`xla_cpu_experimental_ynn_fusion_type` = individual_dot,
individual_convolution, reduce). At the U-Net's small channel counts YNNPACK's convolutions, the
filter gradient above all, are slower than XLA's own. We compile with `dot, eltwise, reduce`
instead: convolutions stay with XLA, and YNNPACK takes the matrix-product fusions, the
element-wise fusions and the reductions. `benchmarks/compile_options.py` measures the choices
against each other: on a 2-core AMD EPYC the EDM reference step and the Diff-Instruct iteration
took about half the time (README, Results).

With those kernels in YNNPACK and the convolutions in XLA's runtime library, the code LLVM
generates is mostly copies, transposes, pads and broadcasts, so LLVM's optimisation level 1
(`xla_backend_optimization_level`, jaxlib's default 3) runs them as fast, and the EDM reference
step compiles in a tenth to a quarter less time (README, Results). Level 0 slows it 1.6×.

Only the CPU backend is affected; GPU and TPU programs compile as before. Set
`ONESTEP_JAX_YNN_FUSION` to a comma-separated subset of `YNN_FUSION_TYPES` (or to `xla_default`
for jaxlib's own choice), and `ONESTEP_JAX_CPU_OPT_LEVEL` to 0-3 (or `xla_default`), to override;
a flag set in `XLA_FLAGS` wins over both.
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Callable, Optional

import jax
import numpy as np

FLAG = 'xla_cpu_experimental_ynn_fusion_type'
ENV = 'ONESTEP_JAX_YNN_FUSION'
XLA_DEFAULT = 'xla_default'
YNN_FUSION_TYPES = ('dot', 'individual_dot', 'individual_convolution', 'eltwise', 'reduce')
DEFAULT = 'dot,eltwise,reduce'
OPT_LEVEL_FLAG = 'xla_backend_optimization_level'
OPT_LEVEL_ENV = 'ONESTEP_JAX_CPU_OPT_LEVEL'
DEFAULT_OPT_LEVEL = '1'


def parse_fusion_types(value: str) -> str:
  """The flag's value for a comma-separated list of `YNN_FUSION_TYPES` ('' = none)."""
  names = [n.strip().lower() for n in value.split(',') if n.strip()]
  unknown = sorted(set(names) - set(YNN_FUSION_TYPES))
  if unknown:
    raise ValueError(f'{ENV}: unknown YNNPACK fusion type(s) {unknown}; use a comma-separated '
                     f'subset of {list(YNN_FUSION_TYPES)}, or {XLA_DEFAULT!r}.')
  return ','.join(f'LIBRARY_FUSION_TYPE_{n.upper()}' for n in names)


def check_opt_level(value: str) -> str:
  """The optimisation level of `ONESTEP_JAX_CPU_OPT_LEVEL`, checked."""
  if value not in ('0', '1', '2', '3'):
    raise ValueError(f'{OPT_LEVEL_ENV}: {value!r} is not an LLVM optimisation level; use 0, 1, '
                     f'2 or 3, or {XLA_DEFAULT!r}.')
  return value


def requested_options() -> dict[str, str]:
  """The options that the environment asks for, checked, without touching any backend.

  Each option is left out when `XLA_FLAGS` sets its flag or its environment variable is
  `xla_default`. Raises ValueError, naming the variable, on a bad value.
  """
  xla_flags = os.environ.get('XLA_FLAGS', '')
  options = {}
  choice = os.environ.get(ENV, DEFAULT).strip()
  if FLAG not in xla_flags and choice != XLA_DEFAULT:
    options[FLAG] = parse_fusion_types(choice)
  level = os.environ.get(OPT_LEVEL_ENV, DEFAULT_OPT_LEVEL).strip()
  if OPT_LEVEL_FLAG not in xla_flags and level != XLA_DEFAULT:
    options[OPT_LEVEL_FLAG] = check_opt_level(level)
  return options


@functools.cache
def compiler_options() -> Optional[dict[str, str]]:
  """The compile options of this library's CPU programs (`requested_options()`), or None
  (backend default): on other backends, when none is requested, and (with a warning) when this
  jaxlib does not know one.
  """
  if jax.default_backend() != 'cpu':
    return None
  options = requested_options()
  if not options:
    return None
  try:  # One tiny program tells whether this jaxlib accepts the options.
    jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
  except jax.errors.JaxRuntimeError as e:
    warnings.warn(f'onestep_jax: this jaxlib does not accept the compile options {options} ({e}); '
                  'programs compile with its defaults, which are slower for convolutions on CPU.')
    return None
  return options


def jit(fun: Callable, **kwargs: Any) -> Callable:
  """`jax.jit(fun, **kwargs)` compiled with `compiler_options()`."""
  return jax.jit(fun, compiler_options=compiler_options(), **kwargs)
