"""Helpers shared by the losses: per-example reductions, gradient injection, input checks."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to

# Smallest per-example normaliser mean|x_g - D_teacher(x_t)| used by DMD and SiD (avoids 0 / 0).
MIN_NORMALIZER = 1e-5


def sum_per_example(v: jnp.ndarray) -> jnp.ndarray:
  """Sum over every axis but the first: [B, ...] -> [B]."""
  return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def mean_per_example(v: jnp.ndarray) -> jnp.ndarray:
  """Mean over every axis but the first: [B, ...] -> [B]."""
  return jnp.mean(v.reshape(v.shape[0], -1), axis=-1)


def data_dim(x: jnp.ndarray) -> int:
  """Number of data dimensions of one example of a batch [B, ...]."""
  return math.prod(x.shape[1:])


def inject_gradient(x: jnp.ndarray, grad: jnp.ndarray) -> jnp.ndarray:
  """0.5 ||x - sg(x - grad)||^2 per example [B], whose gradient with respect to x is exactly `grad`.

  The value equals 0.5 ||grad||^2 and carries no meaning of its own; `grad` is treated as a
  constant (stop-gradient).
  """
  chex.assert_equal_shape([x, grad])
  target = jax.lax.stop_gradient(x - grad)
  return 0.5 * sum_per_example((x - target)**2)


def default_pseudo_huber_c(x: jnp.ndarray) -> float:
  """c = 0.00054 sqrt(d) for d data dimensions per example.

  The rule of Song & Dhariwal (improved consistency training, arXiv 2310.14189, Sec. 3.3), which
  gives c = 0.03 on CIFAR-10 (d = 3072) for data scaled to [-1, 1].
  """
  return 0.00054 * math.sqrt(data_dim(x))


def pseudo_huber_of_sq_norm(sq_norm: jnp.ndarray, c: float) -> jnp.ndarray:
  """sqrt(||r||^2 + c^2) - c from the squared norm ||r||^2."""
  return jnp.sqrt(sq_norm + c**2) - c


DISTANCES = ('l2', 'pseudo_huber')


def distance_per_example(x: jnp.ndarray, target: jnp.ndarray, *, distance: str = 'l2',
                         c: Optional[float] = None) -> jnp.ndarray:
  """'l2': ||x - target||^2, or 'pseudo_huber': sqrt(||x - target||^2 + c^2) - c with
  c = `default_pseudo_huber_c(x)` when None; per example [B]. No stop-gradient is applied."""
  chex.assert_rank(x, {2, 3, 4, 5})
  chex.assert_equal_shape([x, target])
  sq = sum_per_example((x - target)**2)
  if distance == 'l2':
    return sq
  if distance == 'pseudo_huber':
    return pseudo_huber_of_sq_norm(sq, default_pseudo_huber_c(x) if c is None else c)
  raise ValueError(f'unknown distance {distance!r}; choose one of {DISTANCES}')


def check_generator_inputs(x_g: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray) -> None:
  """x_g is a batch [B, ...] (rank >= 2), noise has its shape and sigma has shape [B]."""
  chex.assert_rank(x_g, {2, 3, 4, 5})
  chex.assert_equal_shape([x_g, noise])
  chex.assert_shape(sigma, (x_g.shape[0],))


def noisy_denoisings(*, x_t: jnp.ndarray, sigma: jnp.ndarray, teacher_denoiser: Callable,
                     fake_denoiser: Callable,
                     labels: Optional[jnp.ndarray]) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """(D_teacher(x_t), D_fake(x_t)), both checked to have the shape of x_t."""
  y_real = teacher_denoiser(x_t, sigma, labels)
  y_fake = fake_denoiser(x_t, sigma, labels)
  chex.assert_equal_shape([x_t, y_real, y_fake])
  return y_real, y_fake


def noised(x: jnp.ndarray, sigma: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
  """x + sigma n with a per-example sigma [B] (variance-exploding noising)."""
  return x + expand_to(sigma, x) * noise
