"""Shortcut models: a flow map trained by flow matching plus self-consistency, without a teacher
(Frans, Hafner, Levine, Abbeel, arXiv 2410.12557, Sec. 3).

Flow-matching time (t = 1 noise) and the average velocity F(x_t, t, s) of
onestep_jax.diffusion.flow_maps: the paper's shortcut s(x_t, t, d) with step d is F(x_t, t, t - d)
up to the direction of time. One step of size 2d must equal two steps of size d of the model
itself (Eq. 5),
  F(x_t, t, t - 2d) = [F(x_t, t, t - d) + F(x', t - d, t - 2d)] / 2,  x' = x_t - d F(x_t, t, t - d),
which is progressive distillation's two-half-step target (onestep_jax.losses.progressive) with
the model's own stop-gradient flow map as the teacher. At the smallest step the half-steps query
the model at d = 0, its instantaneous velocity F(x, t, t) (paper Sec. 3), which the
flow-matching term ||F(x_t, t, t) - (eps - x_0)||^2 trains
(onestep_jax.losses.denoising.flow_matching_loss).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.losses.progressive import progressive_distillation_loss


def model_step(average_velocity: Callable, *, euler: jnp.ndarray) -> Callable:
  """step(x, t, s, labels) = x + (s - t) F(x, t, s'), with s' = t (an Euler step of the
  instantaneous velocity) where the per-example flag `euler` [B] is set, else s' = s."""

  def step(x, t, s, labels=None):
    return x + expand_to(s - t, x) * average_velocity(x, t, jnp.where(euler, t, s), labels)

  return step


def shortcut_self_consistency_loss(*, average_velocity: Callable, x_t: jnp.ndarray,
                                   t: jnp.ndarray, s: jnp.ndarray,
                                   labels: Optional[jnp.ndarray] = None,
                                   euler: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """||F_theta(x_t, t, s) - sg([F(x_t, t, m) + F(x', m, s)] / 2)||^2 per example [B], with
  m = (t + s) / 2 and x' the first half-step (arXiv 2410.12557, Eq. 5-6).

  Args:
    average_velocity: F_theta(x_t, t, s, labels); the target's half-steps use it too, under
      stop-gradient.
    x_t: inputs [B, ...] at times t; s < t per example [B] (the step 2d = t - s).
    euler: [B] bool, True where the half-steps are the smallest step and query the instantaneous
      velocity F(x, t, t) (None: nowhere).
  """
  euler = jnp.zeros(t.shape, bool) if euler is None else euler
  # The two half-steps are under stop-gradient inside progressive_distillation_loss.
  return progressive_distillation_loss(average_velocity=average_velocity,
                                       teacher_step=model_step(average_velocity, euler=euler),
                                       x_t=x_t, t=t, s=s, labels=labels)
