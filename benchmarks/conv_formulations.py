"""XLA's convolutions against matrix-product formulations, at the reference U-Net's conv shapes.

  python benchmarks/conv_formulations.py [--repeats=30]
      [--out benchmarks/results/conv_formulations.json]

Issue 6 lists "im2col + dot" among the levers for the U-Net steps on CPU. For every distinct 3x3
convolution of the EDM reference setting's teacher step (benchmarks/train_step.py, read from
the step's own jaxpr), this times, compiled with the library's CPU options (onestep_jax.xla_cpu):
  - the forward pass: XLA's convolution, and im2col (the nine shifted views concatenated along
    the channels, then one matrix product);
  - the filter gradient dL/dW for a given dL/dY: XLA's (the transpose of its convolution), the
    im2col product cols^T dY, and nine products of shifted views, one per kernel tap.
Prints the median milliseconds of each per shape and the totals weighted by each shape's count
in the step, checks that every formulation agrees with XLA's to 1e-5 (relative), and writes the
JSON. The input gradient is not listed: its matrix-product form is the same product as im2col's
with the transposed kernel, followed by a col2im sum.
"""
import collections
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import jax  # noqa: E402
import jax.extend.core  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import step_timing  # noqa: E402
from onestep_jax import xla_cpu  # noqa: E402
from onestep_jax.nets.edm_layers import _conv  # noqa: E402

TOLERANCE = 1e-5


def _eqns(jaxpr):
  """Every equation of a jaxpr, those of its sub-jaxprs (jit, custom VJP, remat) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub)


def reference_conv_shapes() -> collections.Counter:
  """{(input shape NHWC, kernel shape HWIO): count} of the 3x3 convolutions in the forward
  pass of the EDM reference setting's teacher loss."""
  from train_step import REFERENCE, build, config_by_name
  from onestep_jax.train.mesh import global_batch
  with tempfile.TemporaryDirectory() as tmp:
    config = config_by_name(REFERENCE, tmp)
    dataset, setup, trainer, state = build(config)
    batch = global_batch(dataset.get_batch(0, config.train.batch_size, seed=0), trainer.mesh)
  params = {**state.params, **state.frozen}
  jaxpr = jax.make_jaxpr(setup.phases[0].loss_fn)(params, batch, jax.random.key(0)).jaxpr
  shapes = collections.Counter()
  for eqn in _eqns(jaxpr):
    if eqn.primitive.name == 'conv_general_dilated':
      x, w = (tuple(v.aval.shape) for v in eqn.invars[:2])
      if w[:2] == (3, 3):
        shapes[(x, w)] += 1
  if not shapes:
    raise SystemExit('no 3x3 convolution found in the reference teacher step')
  return shapes


def _shifted_views(x, k: int):
  """The k * k views x_pad[:, i:i + H, j:j + W, :] of NHWC `x` zero-padded by k // 2."""
  p = k // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  h, w = x.shape[1:3]
  return [xp[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)]


def forward_im2col(x, w):
  k, c = w.shape[0], x.shape[-1]
  cols = jnp.concatenate(_shifted_views(x, k), axis=-1)
  return (cols.reshape(-1, k * k * c) @ w.reshape(k * k * c, -1)).reshape(x.shape[:3] + (-1,))


def filter_gradient_xla(x, w, dy):
  return jax.vjp(lambda w: _conv(x, w, w.shape[0] // 2), w)[1](dy)[0]


def filter_gradient_im2col(x, w, dy):
  k, c = w.shape[0], x.shape[-1]
  cols = jnp.concatenate(_shifted_views(x, k), axis=-1).reshape(-1, k * k * c)
  return (cols.T @ dy.reshape(-1, dy.shape[-1])).reshape(w.shape)


def filter_gradient_per_tap(x, w, dy):
  k, c = w.shape[0], x.shape[-1]
  d = dy.reshape(-1, dy.shape[-1])
  taps = [v.reshape(-1, c).T @ d for v in _shifted_views(x, k)]
  return jnp.stack(taps).reshape(w.shape)


FORMULATIONS = {
    'forward': {'xla': lambda x, w, dy: _conv(x, w, w.shape[0] // 2),
                'im2col': lambda x, w, dy: forward_im2col(x, w)},
    'filter_gradient': {'xla': filter_gradient_xla, 'im2col': filter_gradient_im2col,
                        'per_tap': filter_gradient_per_tap},
}


def main():
  args = step_timing.repeats_and_out(__doc__, repeats=30, out='conv_formulations.json')
  shapes = reference_conv_shapes()
  keys = iter(jax.random.split(jax.random.key(0), 3 * len(shapes)))
  rows, totals = [], collections.defaultdict(float)
  for (x_shape, w_shape), count in sorted(shapes.items()):
    x = jax.random.normal(next(keys), x_shape)
    w = jax.random.normal(next(keys), w_shape) / np.sqrt(np.prod(w_shape[:3]))
    dy = jax.random.normal(next(keys), x_shape[:3] + w_shape[3:])
    row = {'input': x_shape, 'kernel': w_shape, 'count': count}
    for op, variants in FORMULATIONS.items():
      fns = {name: xla_cpu.jit(fn) for name, fn in variants.items()}
      reference = fns['xla'](x, w, dy)
      for name, fn in fns.items():
        error = float(jnp.max(jnp.abs(fn(x, w, dy) - reference)) / jnp.max(jnp.abs(reference)))
        if error > TOLERANCE:
          raise SystemExit(f'{op}/{name} at {x_shape} x {w_shape} differs from XLA by {error:.1e}')
        ms = 1e3 * step_timing.median_call_seconds(fn, (x, w, dy), args.repeats)
        row[f'{op}/{name}_ms'] = ms
        totals[f'{op}/{name}'] += count * ms
    rows.append(row)
    print(f'{count} x input {x_shape} kernel {w_shape}: ' + ', '.join(
        f'{k[:-3]} {v:.2f}' for k, v in row.items() if k.endswith('_ms')) + ' ms', flush=True)
  print('weighted by count (ms per forward pass of the U-Net): ' + ', '.join(
      f'{k} {v:.1f}' for k, v in totals.items()))
  step_timing.write_json(args.out, {'shapes': rows, 'totals_ms': dict(totals), 'repeats': args.repeats,
                        'threads': os.cpu_count(), '_measured': step_timing.machine()})


if __name__ == '__main__':
  main()
