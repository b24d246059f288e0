"""Consistency distillation: continuous-time sCD in TrigFlow (Lu & Song, arXiv 2410.11081,
Algorithm 1) and discrete-time CD with a target network (Song et al., arXiv 2303.01469, Alg. 2).
"""
from __future__ import annotations

from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.losses.common import distance_per_example, mean_per_example
from onestep_jax.losses.flow_map import directional_derivative, normalize_tangent


def scd_loss(*, trigflow_output: Callable, teacher_velocity: Callable, x_t: jnp.ndarray,
             t: jnp.ndarray, sigma_data: float, labels: Optional[jnp.ndarray] = None,
             r: float = 1.0, c: Optional[float] = 0.1, log_weight: Optional[jnp.ndarray] = None,
             prior_weighting: bool = True, tangent: str = 'jvp',
             fd_step: float = 1e-3) -> jnp.ndarray:
  """Continuous-time consistency distillation in TrigFlow, per example [B] (sCM Algorithm 1).

  TrigFlow: x_t = cos(t) x_0 + sin(t) z, z ~ N(0, sigma_d^2 I), t in (0, pi/2); the consistency
  model is f_theta(x_t, t) = cos(t) x_t - sin(t) sigma_d F_theta, where F_theta =
  `trigflow_output(x_t, t, labels)` (the network output F_theta(x_t / sigma_d, t) of the paper;
  sigma_d F_theta is the model's TrigFlow velocity). With F^- = sg(F_theta), dx_t/dt the teacher's
  TrigFlow velocity, and one JVP whose tangents (cos t sin t dx_t/dt, cos t sin t) carry the
  factor cos t sin t for stability,
    g = -cos^2(t) (sigma_d F^- - dx_t/dt) - r cos(t) sin(t) (x_t + sigma_d dF^-/dt),
    g_hat = g / (||g|| + c),
    loss = lambda(t) e^w / D ||F_theta - F^- - g_hat||^2 - w,
  with w = `log_weight` the adaptive weighting w_phi(t) (trained jointly; None: w = 0), D the
  data dimension, lambda(t) = 1 / (sigma_d tan t) when `prior_weighting` (else 1), and r the
  tangent warm-up factor (sCM ramps r = min(1, step / 10k)). The gradient with respect to
  F_theta is -2 lambda e^w g_hat / D.
  """
  chex.assert_rank(x_t, {2, 3, 4, 5})
  chex.assert_shape(t, (x_t.shape[0],))
  v = jax.lax.stop_gradient(teacher_velocity(x_t, t, labels))
  chex.assert_equal_shape([x_t, v])
  cs = jnp.cos(t) * jnp.sin(t)
  out, d_out = directional_derivative(lambda x, time: trigflow_output(x, time, labels), (x_t, t),
                                      (expand_to(cs, v) * v, cs), tangent=tangent,
                                      fd_step=fd_step)
  chex.assert_equal_shape([x_t, out])
  out_minus, d_out = jax.lax.stop_gradient((out, d_out))
  g = (-expand_to(jnp.cos(t)**2, x_t) * (sigma_data * out_minus - v)
       - r * (expand_to(cs, x_t) * x_t + sigma_data * d_out))
  g = normalize_tangent(g, c)
  sq = mean_per_example(jnp.square(out - out_minus - g))
  weight = 1.0 / (sigma_data * jnp.tan(t)) if prior_weighting else jnp.ones_like(t)
  w = jnp.zeros_like(t) if log_weight is None else log_weight
  chex.assert_shape(w, t.shape)
  return weight * jnp.exp(w) * sq - w


def consistency_distillation_loss(*, consistency_fn: Callable, target_fn: Callable,
                                  x_t: jnp.ndarray, t: jnp.ndarray, x_next: jnp.ndarray,
                                  t_next: jnp.ndarray, labels: Optional[jnp.ndarray] = None,
                                  distance: str = 'l2',
                                  c: Optional[float] = None) -> jnp.ndarray:
  """Discrete consistency distillation, per example [B] (arXiv 2303.01469, Eq. 7, lambda = 1).

  d(f_theta(x_t, t), sg f_theta^-(x_next, t_next)), where x_next is one step of the teacher's ODE
  from (x_t, t) to the adjacent grid time t_next < t (e.g. `flow_maps.heun_step`) and f^- is
  the target network (an EMA of theta). d is 'l2' or 'pseudo_huber' with constant c (None:
  0.00054 sqrt(d), arXiv 2310.14189); the paper's LPIPS needs a pretrained network.

  Args:
    consistency_fn: f_theta(x, t, labels) -> x0 estimate, differentiable.
    target_fn: f_theta^-(x, t, labels) (evaluated under stop-gradient).
    x_t, x_next: [B, ...] at per-example times t, t_next [B].
  """
  chex.assert_rank(x_t, {2, 3, 4, 5})
  chex.assert_equal_shape([x_t, x_next])
  chex.assert_shape([t, t_next], (x_t.shape[0],))
  target = jax.lax.stop_gradient(target_fn(x_next, t_next, labels))
  return distance_per_example(consistency_fn(x_t, t, labels), target, distance=distance, c=c)
