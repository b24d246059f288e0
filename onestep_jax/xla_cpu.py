"""Which operations XLA:CPU hands to YNNPACK when it compiles this library's programs (issue 6).

jaxlib 0.10's CPU compiler sends every convolution, every standalone matrix product and the
reductions to its YNNPACK kernels (`xla_cpu_experimental_ynn_fusion_type` = individual_dot,
individual_convolution, reduce). At the U-Net's small channel counts YNNPACK's convolutions, the
filter gradient above all, are slower than XLA's own. We compile with `dot, eltwise, reduce`
instead: convolutions stay with XLA, and YNNPACK takes the matrix-product fusions, the
element-wise fusions and the reductions. `benchmarks/ynn_fusion.py` measures the choices against
each other: on a 2-core AMD EPYC the EDM reference step and the Diff-Instruct iteration took
about half the time (README, Results).

Only the CPU backend is affected; GPU and TPU programs compile as before. Set
`ONESTEP_JAX_YNN_FUSION` to a comma-separated subset of `YNN_FUSION_TYPES` (or to `xla_default`
for jaxlib's own choice) to override; a value of the flag in `XLA_FLAGS` wins over both.
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


def parse_fusion_types(value: str) -> str:
  """The flag's value for a comma-separated list of `YNN_FUSION_TYPES` ('' = none)."""
  names = [n.strip().lower() for n in value.split(',') if n.strip()]
  unknown = sorted(set(names) - set(YNN_FUSION_TYPES))
  if unknown:
    raise ValueError(f'{ENV}: unknown YNNPACK fusion type(s) {unknown}; use a comma-separated '
                     f'subset of {list(YNN_FUSION_TYPES)}, or {XLA_DEFAULT!r}.')
  return ','.join(f'LIBRARY_FUSION_TYPE_{n.upper()}' for n in names)


@functools.cache
def compiler_options() -> Optional[dict[str, str]]:
  """The compile options of this library's CPU programs, or None (backend default).

  None on other backends, when `XLA_FLAGS` sets the flag, when `ONESTEP_JAX_YNN_FUSION` is
  `xla_default`, and (with a warning) when this jaxlib does not know the option.
  """
  choice = os.environ.get(ENV, DEFAULT).strip()
  if (jax.default_backend() != 'cpu' or FLAG in os.environ.get('XLA_FLAGS', '')
      or choice == XLA_DEFAULT):
    return None
  options = {FLAG: parse_fusion_types(choice)}
  try:  # One tiny program tells whether this jaxlib accepts the option.
    jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
  except jax.errors.JaxRuntimeError as e:
    warnings.warn(f'onestep_jax: this jaxlib does not accept {FLAG}={options[FLAG]} ({e}); '
                  'programs compile with its default YNNPACK choice, which is slower for '
                  'convolutions on CPU.')
    return None
  return options


def jit(fun: Callable, **kwargs: Any) -> Callable:
  """`jax.jit(fun, **kwargs)` compiled with `compiler_options()`."""
  return jax.jit(fun, compiler_options=compiler_options(), **kwargs)
