"""Progressive distillation (Salimans & Ho, arXiv 2202.00512, Algorithm 2), for a flow-map student
in flow-matching time: one student step from t to s matches two teacher steps t -> mid -> s."""
from __future__ import annotations

from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.losses.common import sum_per_example


def two_half_steps(teacher_step: Callable, x_t: jnp.ndarray, t: jnp.ndarray, s: jnp.ndarray,
                   labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """teacher_step(teacher_step(x_t, t, mid), mid, s) with mid = (t + s) / 2."""
  mid = 0.5 * (t + s)
  return teacher_step(teacher_step(x_t, t, mid, labels), mid, s, labels)


def progressive_distillation_loss(*, average_velocity: Callable, teacher_step: Callable,
                                  x_t: jnp.ndarray, t: jnp.ndarray, s: jnp.ndarray,
                                  labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """||F_theta(x_t, t, s) - (z - x_t) / (s - t)||^2 per example [B], z = two teacher half-steps.

  The target is the average velocity that takes x_t to the point z two teacher steps reach, so
  one student step f = x_t + (s - t) F_theta lands on z (PD's x-target, rewritten for a flow map;
  the error is that of f divided by (t - s)^2, PD's per-step normalisation). `teacher_step(x, t,
  s, labels)` is the teacher's DDIM step in the first round (`flow_maps.euler_step` of its
  velocity) and the previous round's student flow map afterwards; it is stop-gradient.
  """
  chex.assert_rank(x_t, {2, 3, 4, 5})
  chex.assert_shape([t, s], (x_t.shape[0],))
  z = jax.lax.stop_gradient(two_half_steps(teacher_step, x_t, t, s, labels))
  chex.assert_equal_shape([x_t, z])
  target = (z - x_t) / expand_to(s - t, x_t)
  return sum_per_example(jnp.square(average_velocity(x_t, t, s, labels) - target))
