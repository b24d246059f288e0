"""Forward + backward time of the EDM U-Nets' group norm against the textbook formulation.

  python benchmarks/group_norm_speed.py [--repeats=20]
      [--out benchmarks/results/group_norm_speed.json]

For each activation shape of the reference U-Net (benchmarks/train_step.py, batch 16), times the
gradient of sum(GroupNorm(x) * y) with respect to the input and the parameters, for
`edm_layers.GroupNorm` (per-channel sums over space, then over each group's channels) and for one
reduction over the [..., groups, C // groups] view (the form it replaced on 1 December 2026).
Prints the median milliseconds of each and the largest relative difference of the gradients, and
writes the JSON. Both compute the same function; only the float rounding differs.
"""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import step_timing  # noqa: E402
from onestep_jax.nets import edm_layers  # noqa: E402

NORM_SHAPES = ((16, 32, 32, 32), (16, 32, 32, 96), (16, 16, 16, 64), (16, 8, 8, 64))


def group_norm_one_reduction(x, weight, bias, groups: int, eps: float = 1e-5):
  """The textbook form: mean and variance of the [..., groups, C // groups] view at once."""
  c = x.shape[-1]
  xg = x.reshape(x.shape[:-1] + (groups, c // groups))
  axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
  mean = xg.mean(axes, keepdims=True)
  var = jnp.square(xg - mean).mean(axes, keepdims=True)
  return ((xg - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape) * weight + bias


def group_norm_library(x, weight, bias, groups: int):
  layer = edm_layers.GroupNorm(num_groups=groups, min_channels_per_group=1)
  return layer.apply({'params': {'weight': weight, 'bias': bias}}, x)


def time_gradient(fn, args, repeats: int):
  """Median seconds of jit(grad(sum(fn(*args) * y))) over all args, and the gradients."""
  y = jax.random.normal(jax.random.key(9), jax.eval_shape(fn, *args).shape)
  grad = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * y), argnums=tuple(range(len(args)))))
  out = jax.block_until_ready(grad(*args))
  return step_timing.median_call_seconds(grad, args, repeats, warmup=0), out


def compare(name, library, baseline, args, repeats):
  t_lib, g_lib = time_gradient(library, args, repeats)
  t_base, g_base = time_gradient(baseline, args, repeats)
  diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(g_lib, g_base))
  print(f'{name:34s} library {1e3 * t_lib:7.2f} ms  baseline {1e3 * t_base:7.2f} ms  '
        f'({t_base / t_lib:4.1f}x)  max rel. gradient difference {diff:.1e}', flush=True)
  return {'library_ms': 1e3 * t_lib, 'baseline_ms': 1e3 * t_base, 'speedup': t_base / t_lib,
          'max_rel_gradient_difference': diff}


def main():
  args = step_timing.repeats_and_out(__doc__, repeats=20, out='group_norm_speed.json')
  keys = iter(jax.random.split(jax.random.key(0), 64))
  results = {}
  for shape in NORM_SHAPES:
    c = shape[-1]
    groups = min(32, c // 4)  # the U-Nets' rule
    x = jax.random.normal(next(keys), shape) * 2 + 0.5
    weight = 1 + 0.1 * jax.random.normal(next(keys), (c,))
    bias = jax.random.normal(next(keys), (c,))
    results[f'group_norm {shape}'] = compare(
        f'group norm {shape}', lambda x, w, b: group_norm_library(x, w, b, groups),
        lambda x, w, b: group_norm_one_reduction(x, w, b, groups), (x, weight, bias), args.repeats)
  out = {'results': results, 'repeats': args.repeats, '_measured': step_timing.machine()}
  step_timing.write_json(args.out, out)


if __name__ == '__main__':
  main()
