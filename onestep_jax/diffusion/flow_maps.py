"""Flow maps in flow-matching time: definition, closed forms, ODE steps, (t, s) proposals and
few-step sampling.

Flow-matching (rectified-flow) time: x_t = (1 - t) x_0 + t eps, t = 1 is noise, velocity
v = eps - x_0 (arXiv 2209.03003). A flow map f(x_t, t, s) maps x_t to the solution of the
PF-ODE dx/dt = v(x, t) at time s; it is parameterised by an average velocity F,
  f(x_t, t, s) = x_t + (s - t) F(x_t, t, s),
so f(x, t, t) = x holds exactly (Align Your Flow, Sabour et al., arXiv 2506.14603, Sec. 3).
s = 0 gives a consistency model, s -> t the instantaneous velocity F(x, t, t) = v(x, t).

Callables here: `average_velocity(x_t, t, s, labels) -> F` and `velocity(x_t, t, labels) -> v`,
with per-example times [B]. `teacher_velocity` reads any EDM denoiser D(x, sigma, labels) (network
or analytic) in these coordinates.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from onestep_jax.diffusion import parameterization
from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.diffusion.schedules import RectifiedFlowSchedule, TrigFlowSchedule

SCHEDULE = RectifiedFlowSchedule()


def teacher_velocity(denoiser: Callable) -> Callable:
  """v(x_t, t, labels) of an EDM denoiser D(x, sigma, labels), read at sigma = t / (1 - t)."""
  return parameterization.predictor_from_denoiser(denoiser, schedule=SCHEDULE,
                                                  prediction='velocity')


def flow_map(average_velocity: Callable) -> Callable:
  """f(x_t, t, s, labels) = x_t + (s - t) F(x_t, t, s, labels) (arXiv 2506.14603, Eq. 3)."""

  def f(x_t, t, s, labels=None):
    return x_t + expand_to(s - t, x_t) * average_velocity(x_t, t, s, labels)

  return f


def trigflow_velocity(denoiser: Callable, *, sigma_data: float) -> Callable:
  """dx_t/dt(x_t, t, labels) of an EDM denoiser in TrigFlow, x_t = cos t x_0 + sin t z with
  z ~ N(0, sigma_d^2 I) (sCM, arXiv 2410.11081): the sCD teacher."""
  return parameterization.predictor_from_denoiser(
      denoiser, schedule=TrigFlowSchedule(sigma_data=sigma_data), prediction='velocity')


def trigflow_output(consistency_fn: Callable, *, sigma_data: float) -> Callable:
  """sCM's F_theta(x_t, t, labels) (TrigFlow) of a consistency model given in flow-matching
  coordinates, consistency_fn(x_t, t, labels) -> x0 estimate (e.g. a flow map at s = 0):
  sigma_d F_theta is the TrigFlow velocity of that x0 estimate."""
  denoiser = parameterization.denoiser_from_predictor(consistency_fn, schedule=SCHEDULE,
                                                      prediction='x0')
  velocity = trigflow_velocity(denoiser, sigma_data=sigma_data)
  return lambda x_t, t, labels=None: velocity(x_t, t, labels) / sigma_data


def time_from_edm_sigma(sigma) -> jnp.ndarray:
  """The flow-matching time t = sigma / (1 + sigma) of EDM noise level sigma (e.g. sigma_max = 80
  gives t = 80/81: where the teacher's EDM sampler starts)."""
  return SCHEDULE.time_from_edm_sigma(sigma)


# --- Gaussian data: closed forms (AYF, Theorem 3.1) -------------------------------------------

def gaussian_marginal_std(t, c: float) -> jnp.ndarray:
  """Std of x_t = (1 - t) x_0 + t eps for x_0 ~ N(0, c^2 I): sqrt((1 - t)^2 c^2 + t^2)."""
  t = jnp.asarray(t)
  return jnp.sqrt((1.0 - t)**2 * c**2 + t**2)


def gaussian_velocity(x_t, t, c: float) -> jnp.ndarray:
  """Exact PF-ODE velocity for data N(0, c^2 I): v = (d/dt log std_t) x_t."""
  t = jnp.asarray(t)
  rate = (t - (1.0 - t) * c**2) / gaussian_marginal_std(t, c)**2
  return expand_to(rate, x_t) * x_t


def gaussian_flow_map(x_t, t, s, c: float) -> jnp.ndarray:
  """Exact flow map for data N(0, c^2 I): the linear ODE gives x_s = (std_s / std_t) x_t.

  At s = 0 it is AYF's optimal consistency model c x_t / sqrt(t^2 + (1 - t)^2 c^2).
  """
  ratio = gaussian_marginal_std(s, c) / gaussian_marginal_std(t, c)
  return expand_to(ratio, x_t) * x_t


# --- One ODE step of a velocity ---------------------------------------------------------------

def euler_step(velocity: Callable, x_t, t, s, labels=None) -> jnp.ndarray:
  """x_t + (s - t) v(x_t, t): an Euler step, which in flow-matching time is exactly a DDIM step
  (x_0 and eps predicted at t, recombined at s)."""
  return x_t + expand_to(s - t, x_t) * velocity(x_t, t, labels)


def heun_step(velocity: Callable, x_t, t, s, labels=None) -> jnp.ndarray:
  """Heun's second-order step from t to s (the teacher step of consistency distillation, arXiv
  2303.01469, here in flow-matching time)."""
  d = velocity(x_t, t, labels)
  x_euler = x_t + expand_to(s - t, x_t) * d
  return x_t + expand_to(0.5 * (s - t), x_t) * (d + velocity(x_euler, s, labels))


# --- Training-time proposals ------------------------------------------------------------------

def sample_times(key: jax.Array, num: int, *, mean: float = -0.8, std: float = 1.0,
                 dtype=jnp.float32) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(t, s), each [num], with t >= s: two independent logit-normal times sigmoid(N(mean, std^2)),
  sorted.

  AYF's exact (t, s) proposal is not public; this follows the setting of a third-party
  re-implementation recorded in METHODS.md Sec. 12 (mean -0.8, std 1.0) [unverified].
  """
  u = jax.nn.sigmoid(mean + std * jax.random.normal(key, (2, num), dtype))
  return jnp.max(u, axis=0), jnp.min(u, axis=0)


# --- Few-step sampling ------------------------------------------------------------------------

def time_grid(num_steps: int, *, t_max: float = 1.0, dtype=jnp.float32) -> jnp.ndarray:
  """num_steps + 1 times from t_max down to 0, evenly spaced."""
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f'num_steps must be a positive int, got {num_steps!r}')
  if not 0 < t_max <= 1:
    raise ValueError(f'need 0 < t_max <= 1, got {t_max}')
  return jnp.linspace(t_max, 0.0, num_steps + 1, dtype=dtype)


def renoise(x_s, s, t, noise) -> jnp.ndarray:
  """A sample of x_t given x_s (s <= t) under x_t = (1 - t) x_0 + t eps: the VE noising
  x_t / (1 - t) = x_s / (1 - s) + sqrt(sigma_t^2 - sigma_s^2) n with sigma = t / (1 - t)."""
  sig_s, sig_t = s / (1.0 - s), t / (1.0 - t)
  std = (1.0 - t) * jnp.sqrt(jnp.maximum(sig_t**2 - sig_s**2, 0.0))
  return expand_to((1.0 - t) / (1.0 - s), x_s) * x_s + expand_to(std, x_s) * noise


def gamma_time(t_next, gamma: float) -> jnp.ndarray:
  """The time the map jumps to before re-noising to t_next: VE noise level sqrt(1 - gamma^2)
  sigma(t_next) (CTM's gamma-sampling, Kim et al., arXiv 2310.02279, Sec. 5). gamma = 0 gives
  t_next (deterministic), gamma = 1 gives 0 (denoise fully, as consistency models do)."""
  sigma = jnp.sqrt(1.0 - gamma**2) * t_next / (1.0 - t_next)
  return sigma / (1.0 + sigma)


def sample(average_velocity: Callable, x_init, *, times, labels=None, gamma: float = 0.0,
           key: Optional[jax.Array] = None, unroll: bool = False) -> jnp.ndarray:
  """Multi-step flow-map sampling from x_init at times[0] along a decreasing grid `times`
  (e.g. `time_grid(N, t_max=...)`), one network evaluation per step.

  Step i jumps with the flow map from times[i] to gamma_time(times[i+1], gamma) and, when
  gamma > 0, re-noises from there to times[i+1] with fresh noise (AYF, Sec. 4; CTM's
  gamma-sampling). gamma = 0 is deterministic; gamma = 1 is consistency-model multistep sampling.
  The last step (to time 0) never re-noises.

  `unroll=True` traces the steps one after another instead of in a loop. Use it when the samples
  are differentiated: XLA:CPU runs a convolution's filter gradient over 100x slower inside a loop
  body than outside one (jax-ml/jax#12868; benchmarks/loop_body_convolution.py).
  """
  times = jnp.asarray(times, x_init.dtype)
  if times.ndim != 1 or times.shape[0] < 2:
    raise ValueError(f'times must be a 1-D grid of at least 2 times, got shape {times.shape}')
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f'gamma must be in [0, 1], got {gamma}')
  if gamma > 0 and key is None:
    raise ValueError('gamma > 0 re-noises: pass a PRNG key')
  f = flow_map(average_velocity)
  n = x_init.shape[0]
  keys = jax.random.split(key, times.shape[0] - 1) if gamma > 0 else None

  def step(x, inputs):
    t, t_next, k = inputs
    if gamma == 0:
      return f(x, jnp.full((n,), t), jnp.full((n,), t_next), labels), None
    s = gamma_time(t_next, gamma)
    x_s = f(x, jnp.full((n,), t), jnp.full((n,), s), labels)
    x_next = renoise(x_s, s, t_next, jax.random.normal(k, x.shape, x.dtype))
    return jnp.where(t_next > 0, x_next, x_s), None

  inputs = (times[:-1], times[1:], keys)
  if not unroll:
    return jax.lax.scan(step, x_init, inputs)[0]
  x = x_init  # a Python loop: scan(unroll=True) still loops when there is a single step
  for i in range(times.shape[0] - 1):
    x, _ = step(x, jax.tree.map(lambda a: a[i], inputs))
  return x
