"""One forward pass of a network serving two losses, each differentiated through one input.

A one-step method's fake score is trained by denoising at x_t = sg(x_g) + sigma n (gradient
into its parameters only) while the generator's loss reads it at the same x_t (gradient into x_g
only, through the input). `split_gradients` evaluates the network once and returns the output
twice, so that each copy carries only one of the two gradients; the backward pass of a copy
whose cotangent is zero (a loss reading the output under stop-gradient) is skipped.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.custom_derivatives import SymbolicZero


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def split_gradients(fn: Callable, params: Any, x: jax.Array, sigma: jax.Array, labels: Any):
  """(y_params, y_input), both equal to fn(params, x, sigma, labels): gradients reach `params`
  only through y_params and `x` only through y_input; none reach sigma or labels. `fn` must be
  hashable (e.g. a NetworkDenoiser's bound `denoise`)."""
  y = fn(params, x, sigma, labels)
  return y, y


def _forward(fn, params, x, sigma, labels):
  value = lambda tree: jax.tree.map(lambda leaf: leaf.value, tree)  # noqa: E731
  const = value((sigma, labels))
  y, vjp = jax.vjp(lambda p, x: fn(p, x, *const), value(params), value(x))
  return (y, y), vjp


def _backward(fn, vjp, cotangents):
  del fn
  ct_params, ct_input = cotangents
  g_params = None if isinstance(ct_params, SymbolicZero) else vjp(ct_params)[0]
  g_input = None if isinstance(ct_input, SymbolicZero) else vjp(ct_input)[1]
  return g_params, g_input, None, None


split_gradients.defvjp(_forward, _backward, symbolic_zeros=True)
