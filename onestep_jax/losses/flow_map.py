"""Align Your Flow: Eulerian and Lagrangian map distillation (Sabour, Fidler, Kreis, arXiv
2506.14603, Sec. 3.2 and 3.4), and the tangent helpers that the consistency losses share.

Flow-matching time (x_t = (1 - t) x_0 + t eps, t = 1 noise), a student average velocity
F_theta(x_t, t, s) and its flow map f_theta = x_t + (s - t) F_theta, t > s (see
onestep_jax.diffusion.flow_maps). Both losses are stop-gradient surrogates: their value
0.5 ||g_hat||^2 carries no meaning, their gradient with respect to f_theta is the normalised
tangent g_hat exactly (the pseudo-target of METHODS.md Sec. 12), and nothing flows into the
teacher or into the tangent.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import chex
import jax
import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.losses.common import inject_gradient, sum_per_example

TANGENTS = ('jvp', 'finite_difference')


def directional_derivative(fn: Callable, primals: Sequence[jnp.ndarray],
                           tangents: Sequence[jnp.ndarray], *, tangent: str = 'jvp',
                           fd_step: float = 1e-3) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(fn(*primals), d/dh fn(*(primals + h tangents)) at h = 0).

  'jvp': one forward-mode `jax.jvp`; its primal output is differentiable, so a loss built on it
  needs no second forward pass for its gradient. 'finite_difference': the central difference
  with step `fd_step` (two more forward passes, under stop-gradient), as FastGen offers for sCM.
  """
  if tangent == 'jvp':
    return jax.jvp(fn, tuple(primals), tuple(tangents))
  if tangent == 'finite_difference':
    shifted = lambda h: fn(*(p + h * tp for p, tp in zip(primals, tangents)))
    derivative = (shifted(fd_step) - shifted(-fd_step)) / (2.0 * fd_step)
    return fn(*primals), jax.lax.stop_gradient(derivative)
  raise ValueError(f'unknown tangent {tangent!r}; valid: {list(TANGENTS)}')


def normalize_tangent(g: jnp.ndarray, c: Optional[float]) -> jnp.ndarray:
  """g / (||g|| + c) per example (tangent normalisation of sCM, arXiv 2410.11081, Sec. 5, and
  AYF Sec. 3.4; c = 0.1 in both); `c=None` returns g unchanged."""
  if c is None:
    return g
  norm = jnp.sqrt(sum_per_example(jnp.square(g.astype(jnp.float32))))
  return g / expand_to(norm + c, g).astype(g.dtype)


def _check(x_t, t, s):
  chex.assert_rank(x_t, {2, 3, 4, 5})
  chex.assert_shape([t, s], (x_t.shape[0],))


def ayf_emd_loss(*, average_velocity: Callable, teacher_velocity: Callable, x_t: jnp.ndarray,
                 t: jnp.ndarray, s: jnp.ndarray, labels: Optional[jnp.ndarray] = None,
                 r: float = 1.0, c: Optional[float] = 0.1, tangent: str = 'jvp',
                 fd_step: float = 1e-3) -> jnp.ndarray:
  """AYF-EMD, Eulerian map distillation, per example [B] (arXiv 2506.14603, Eq. 7 and Sec. 3.4).

  The map must not change along the teacher's ODE: d/dt f(x_t, t, s) = 0 with
  dx_t/dt = v_phi(x_t, t). With F^- = sg(F_theta) and dF^-/dt = d_t F + (grad_x F) v_phi from one
  JVP with tangents (v_phi, 1) at fixed s,
    g = (v_phi - F^-) + r (s - t) dF^-/dt,       g_hat = g / (||g|| + c),
  and the gradient with respect to f_theta(x_t, t, s) is g_hat. With r = 1 and c = None this is
  the continuous-time limit of the discrete loss ||f_theta(x_t, t, s) - f^-(x_t', t', s)||^2 / dt
  with x_t' one teacher step towards s; at s = 0 it is the continuous-time consistency gradient,
  and divided by t - s it tends to the flow-matching gradient of ||F_theta - v_phi||^2 / 2 as
  s -> t. r < 1 (the regularised tangent warm-up, r ramped to 0.99) keeps part of that
  flow-matching pull.

  Args:
    average_velocity: F_theta(x_t, t, s, labels), differentiable in its parameters.
    teacher_velocity: v_phi(x_t, t, labels) (evaluated under stop-gradient).
    x_t: noisy inputs [B, ...] at times t.
    t, s: per-example times [B], t > s.
    labels: passed to both networks.
    r: tangent warm-up factor in [0, 1].
    c: tangent normalisation constant (None: no normalisation).
    tangent: 'jvp' or 'finite_difference' (see `directional_derivative`).
    fd_step: step of the finite difference.
  """
  _check(x_t, t, s)
  v = jax.lax.stop_gradient(teacher_velocity(x_t, t, labels))
  chex.assert_equal_shape([x_t, v])
  f_avg, d_f_avg = directional_derivative(
      lambda x, time: average_velocity(x, time, s, labels), (x_t, t), (v, jnp.ones_like(t)),
      tangent=tangent, fd_step=fd_step)
  chex.assert_equal_shape([x_t, f_avg])
  f_minus, d_f_avg = jax.lax.stop_gradient((f_avg, d_f_avg))
  g = (v - f_minus) + expand_to(r * (s - t), x_t) * d_f_avg
  return inject_gradient(x_t + expand_to(s - t, x_t) * f_avg, normalize_tangent(g, c))


def ayf_lmd_loss(*, average_velocity: Callable, teacher_velocity: Callable, x_t: jnp.ndarray,
                 t: jnp.ndarray, s: jnp.ndarray, labels: Optional[jnp.ndarray] = None,
                 r: float = 1.0, c: Optional[float] = 0.1, tangent: str = 'jvp',
                 fd_step: float = 1e-3) -> jnp.ndarray:
  """AYF-LMD, Lagrangian map distillation, per example [B] (arXiv 2506.14603, Eq. 9).

  The map's end point must move with the teacher's ODE: d/ds f(x_t, t, s) = v_phi(f, s). With
  dF^-/ds from one JVP in s (tangent 1) and f^- = sg(f_theta),
    g = (v_phi(f^-, s) - F^-) - r (s - t) dF^-/ds,     g_hat = g / (||g|| + c),
  and the gradient with respect to f_theta(x_t, t, s) is g_hat: the continuous-time limit of
  ||f_theta(x_t, t, s) - [f^-(x_t, t, s + ds) - ds v_phi(f^-(x_t, t, s + ds), s + ds)]||^2 / ds.
  As s -> t it also tends to flow matching. Arguments as `ayf_emd_loss`.
  """
  _check(x_t, t, s)
  f_avg, d_f_avg = directional_derivative(
      lambda time: average_velocity(x_t, t, time, labels), (s,), (jnp.ones_like(s),),
      tangent=tangent, fd_step=fd_step)
  chex.assert_equal_shape([x_t, f_avg])
  f_minus, d_f_avg = jax.lax.stop_gradient((f_avg, d_f_avg))
  end = x_t + expand_to(s - t, x_t) * f_minus
  v_end = jax.lax.stop_gradient(teacher_velocity(end, s, labels))
  chex.assert_equal_shape([x_t, v_end])
  g = (v_end - f_minus) - expand_to(r * (s - t), x_t) * d_f_avg
  return inject_gradient(x_t + expand_to(s - t, x_t) * f_avg, normalize_tangent(g, c))
