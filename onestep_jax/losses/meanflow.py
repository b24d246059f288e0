"""MeanFlow: a flow map trained from its own JVP, without a teacher (Geng, Deng, Bai, Kolter, He,
arXiv 2505.13447, Sec. 4).

Flow-matching time (x_t = (1 - t) x_0 + t eps, t = 1 noise) and the average velocity
F(x_t, t, s) of onestep_jax.diffusion.flow_maps (MeanFlow's u(z_t, r, t) with r = s). The exact
average velocity satisfies the MeanFlow identity (paper Eq. 6)
  F(x_t, t, s) = v(x_t, t) - (t - s) dF(x_t, t, s)/dt,   dF/dt = d_t F + (grad_x F) v,
and the loss regresses F_theta onto the right-hand side under stop-gradient (Eq. 9). With the
conditional velocity v = eps - x_0 the target is affine in v, so its expectation given x_t is the
target of the marginal velocity: the loss needs no teacher. Its gradient with respect to F, 2 (F -
target) = -2 g, is twice AYF-EMD's unnormalised tangent g with r = 1 (onestep_jax.losses.flow_map).
"""
from __future__ import annotations

from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.losses.common import sum_per_example
from onestep_jax.losses.flow_map import directional_derivative


def adaptive_weight(sq_error: jnp.ndarray, *, p: float, c: float) -> jnp.ndarray:
  """sg(1 / (||Delta||^2 + c)^p) per example (MeanFlow Sec. 4.3): p = 0 is the squared L2 loss,
  p = 0.5 a pseudo-Huber-like loss; the paper uses p = 1 and c = 1e-3."""
  return jax.lax.stop_gradient(1.0 / (sq_error + c)**p)


def meanflow_loss(*, average_velocity: Callable, x_t: jnp.ndarray, t: jnp.ndarray,
                  s: jnp.ndarray, velocity: jnp.ndarray, labels: Optional[jnp.ndarray] = None,
                  p: float = 1.0, c: float = 1e-3, tangent: str = 'jvp',
                  fd_step: float = 1e-3) -> jnp.ndarray:
  """sg(w) ||F_theta(x_t, t, s) - sg(v - (t - s) dF_theta/dt)||^2 per example [B] (arXiv
  2505.13447, Eq. 9 with the adaptive weight w of Sec. 4.3).

  dF/dt comes from one JVP of F_theta(., ., s) with tangents (v, 1) (MeanFlow Algorithm 1), or
  from a central finite difference (`tangent='finite_difference'`). At s = t the loss is flow
  matching ||F_theta(x_t, t, t) - v||^2.

  Args:
    average_velocity: F_theta(x_t, t, s, labels), differentiable in its parameters.
    x_t: noisy inputs [B, ...] at times t.
    t, s: per-example times [B], t >= s.
    velocity: v at (x_t, t), shaped like x_t: the conditional eps - x_0 when training from scratch,
      or a teacher's velocity; treated as a constant.
    labels: passed to the network.
    p, c: adaptive weight 1 / (||Delta||^2 + c)^p (p = 0: no weighting).
    tangent, fd_step: see onestep_jax.losses.flow_map.directional_derivative.
  """
  chex.assert_rank(x_t, {2, 3, 4, 5})
  chex.assert_shape([t, s], (x_t.shape[0],))
  chex.assert_equal_shape([x_t, velocity])
  v = jax.lax.stop_gradient(velocity)
  f_avg, d_f_avg = directional_derivative(
      lambda x, time: average_velocity(x, time, s, labels), (x_t, t), (v, jnp.ones_like(t)),
      tangent=tangent, fd_step=fd_step)
  chex.assert_equal_shape([x_t, f_avg])
  target = jax.lax.stop_gradient(v - expand_to(t - s, x_t) * d_f_avg)
  sq = sum_per_example(jnp.square(f_avg - target))
  return adaptive_weight(sq, p=p, c=c) * sq
