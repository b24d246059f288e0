"""The compile options of this library's CPU programs (issue 6): YNNPACK's share, LLVM's effort,
and the scheduler.

jaxlib 0.10's CPU compiler sends every convolution, every standalone matrix product and the
reductions to its YNNPACK kernels (`xla_cpu_experimental_ynn_fusion_type` = individual_dot,
individual_convolution, reduce). At the U-Net's small channel counts YNNPACK's convolutions, the
filter gradient above all, are slower than XLA's own. We compile with `dot, eltwise, reduce`
instead: YNNPACK takes the matrix-product fusions, the element-wise fusions and the reductions,
and the convolutions that no element-wise work fuses with (the filter gradients, mostly) stay
with XLA. An element-wise fusion does take in a neighbouring convolution, which then runs in
YNNPACK: a 3x3 convolution at 32 channels followed by bias and SiLU takes 4.1 ms that way against
2.0 + 0.25 ms apart. With `reduce` alone every convolution stays with XLA: the reference U-Net's
forward pass and input gradient ran 10-25% faster and the EDM step about 10%, but peak memory
(+18% on the EDM step) and the distillation phases' compile times (+15-25%) rise, and whole
iterations' gains were within the machine's noise (also with LLVM level 3), so it is an option,
not the default (docs/RESULTS.md, "Element-wise fusions take the convolutions").
`benchmarks/compile_options.py` measures the choices against each other: on a 2-core AMD EPYC
`dot, eltwise, reduce` made the EDM reference step and the Diff-Instruct iteration about twice as
fast as jaxlib's default (docs/RESULTS.md).

With those kernels in YNNPACK and the convolutions in XLA's runtime library, the code LLVM
generates is mostly copies, transposes, pads and broadcasts, so LLVM's optimisation level 1
(`xla_backend_optimization_level`, jaxlib's default 3) runs them as fast, and the EDM reference
step compiles in a tenth to a quarter less time (docs/RESULTS.md). Level 0 slows it 1.6×.

jaxlib's scheduler orders a program for concurrency: it computes values as soon as their operands
exist, so, for example, the transposed activations that a U-Net's filter gradients need are made
in the forward pass and held through it. `ONESTEP_JAX_CPU_SCHEDULER=memory_optimized`
(`xla_cpu_scheduler_type`) makes them where they are used instead: the EDM reference step's
temporary buffers fall by a sixth, but the two cores overlap less work and the Diff-Instruct
iteration took 3% longer in seconds, 11% in matmul units (docs/RESULTS.md), so it is not the
default.

XLA's `logistic-expander` pass is off (`xla_disable_hlo_passes`), so that the U-Nets' sigmoids
(`onestep_jax.nets.logistic`) reach YNNPACK's element-wise fusions as one instruction, without a
constant 1 broadcast to activation size; XLA's temporaries fall by 18 MB in every U-Net phase,
the passes' times by a few per cent at most (docs/RESULTS.md, "A sigmoid of one instruction").
It stays on when the element-wise fusions are not YNNPACK's, since nothing else on XLA:CPU
evaluates a `logistic`.

Only the CPU backend is affected; GPU and TPU programs compile as before. Set
`ONESTEP_JAX_YNN_FUSION` to a comma-separated subset of `YNN_FUSION_TYPES`,
`ONESTEP_JAX_CPU_OPT_LEVEL` to 0-3, `ONESTEP_JAX_CPU_SCHEDULER` to one of `SCHEDULERS` and
`ONESTEP_JAX_CPU_DISABLED_PASSES` to a comma-separated list of XLA pass names (each, or
`xla_default` for jaxlib's own choice) to override; a flag set in `XLA_FLAGS` wins.
"""
from __future__ import annotations

import dataclasses
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
SCHEDULER_FLAG = 'xla_cpu_scheduler_type'
SCHEDULER_ENV = 'ONESTEP_JAX_CPU_SCHEDULER'
SCHEDULERS = ('memory_optimized', 'concurrency_optimized', 'default')
DEFAULT_SCHEDULER = XLA_DEFAULT  # jaxlib's: CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED
DISABLED_PASSES_FLAG = 'xla_disable_hlo_passes'
DISABLED_PASSES_ENV = 'ONESTEP_JAX_CPU_DISABLED_PASSES'
LOGISTIC_EXPANDER = 'logistic-expander'
DEFAULT_DISABLED_PASSES = LOGISTIC_EXPANDER


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


def parse_scheduler(value: str) -> str:
  """The flag's value for a name of `SCHEDULERS`."""
  if value not in SCHEDULERS:
    raise ValueError(f'{SCHEDULER_ENV}: unknown scheduler {value!r}; use one of '
                     f'{list(SCHEDULERS)}, or {XLA_DEFAULT!r}.')
  return f'CPU_SCHEDULER_TYPE_{value.upper()}'


def check_pass_names(value: str) -> str:
  """The flag's value for a comma-separated list of XLA pass names."""
  names = [n.strip() for n in value.split(',') if n.strip()]
  bad = [n for n in names if not all(ch.isalnum() or ch in '-_' for ch in n)]
  if not names or bad:
    raise ValueError(f'{DISABLED_PASSES_ENV}: {value!r} is not a comma-separated list of XLA '
                     f'pass names (e.g. {DEFAULT_DISABLED_PASSES!r}); use {XLA_DEFAULT!r} to run '
                     'every pass.')
  return ','.join(names)


@dataclasses.dataclass(frozen=True)
class Option:
  """One compile option: its environment variable, XLA flag, default and value parser."""
  env: str
  flag: str
  default: str
  parse: Callable[[str], str]


OPTIONS = (Option(ENV, FLAG, DEFAULT, parse_fusion_types),
           Option(OPT_LEVEL_ENV, OPT_LEVEL_FLAG, DEFAULT_OPT_LEVEL, check_opt_level),
           Option(SCHEDULER_ENV, SCHEDULER_FLAG, DEFAULT_SCHEDULER, parse_scheduler),
           Option(DISABLED_PASSES_ENV, DISABLED_PASSES_FLAG, DEFAULT_DISABLED_PASSES,
                  check_pass_names))


def requested_options() -> dict[str, str]:
  """The options that the environment asks for, checked, without touching any backend.

  Each option is left out when `XLA_FLAGS` sets its flag or its environment variable is
  `xla_default`, and XLA's logistic expander stays on unless YNNPACK takes the element-wise
  fusions. Raises ValueError, naming the variable, on a bad value.
  """
  xla_flags = os.environ.get('XLA_FLAGS', '')
  options = {}
  for option in OPTIONS:
    choice = os.environ.get(option.env, option.default).strip()
    if option.flag not in xla_flags and choice != XLA_DEFAULT:
      options[option.flag] = option.parse(choice)
  if 'LIBRARY_FUSION_TYPE_ELTWISE' not in options.get(FLAG, ''):
    # Only YNNPACK's element-wise fusions evaluate an unexpanded `logistic` on CPU.
    options = with_logistic_expander(options)
  return options


def with_logistic_expander(options: dict[str, str]) -> dict[str, str]:
  """`options` with XLA's logistic expander left on (taken out of the disabled passes)."""
  out = {flag: value for flag, value in options.items() if flag != DISABLED_PASSES_FLAG}
  kept = [name for name in options.get(DISABLED_PASSES_FLAG, '').split(',')
          if name and name != LOGISTIC_EXPANDER]
  if kept:
    out[DISABLED_PASSES_FLAG] = ','.join(kept)
  return out


def check_compiles(options: dict[str, str]) -> None:
  """Compiles one small program with `options`: a SiLU of `onestep_jax.nets.logistic` large
  enough for YNNPACK. Raises jax.errors.JaxRuntimeError if this jaxlib rejects an option, or
  cannot evaluate an unexpanded `logistic` with them."""
  from onestep_jax.nets.logistic import MIN_ELEMENTS, silu
  x = np.zeros(MIN_ELEMENTS, np.float32)
  jax.jit(lambda x: silu(x) + 1, compiler_options=options).lower(x).compile()


@functools.cache
def compiler_options() -> Optional[dict[str, str]]:
  """The compile options of this library's CPU programs (`requested_options()`), or None
  (backend default): on other backends, when none is requested, and (with a warning) when this
  jaxlib does not know one. If it cannot compile an unexpanded `logistic` with them, XLA's
  logistic expander stays on (with a warning).
  """
  if jax.default_backend() != 'cpu':
    return None
  options = requested_options()
  if not options:
    return None
  try:
    check_compiles(options)
  except jax.errors.JaxRuntimeError as e:
    expanded = with_logistic_expander(options)
    if expanded != options:
      try:
        check_compiles(expanded)
        warnings.warn(f'onestep_jax: this jaxlib cannot compile an unexpanded logistic with '
                      f'{options} ({e}); XLA\'s logistic expander stays on.')
        return expanded or None
      except jax.errors.JaxRuntimeError:
        pass
    warnings.warn(f'onestep_jax: this jaxlib does not accept the compile options {options} ({e}); '
                  'programs compile with its defaults, which are slower for convolutions on CPU.')
    return None
  return options


def jit(fun: Callable, **kwargs: Any) -> Callable:
  """`jax.jit(fun, **kwargs)` compiled with `compiler_options()`."""
  return jax.jit(fun, compiler_options=compiler_options(), **kwargs)
