"""Conversions between x0 (denoiser), epsilon, score and velocity predictions.

For x_t = alpha x_0 + sigma eps (Karras et al. 2022, arXiv 2206.00364, Sec. 2-4; sCM, arXiv
2410.11081, Sec. 2):
  eps      = (x_t - alpha x0) / sigma
  score    = (alpha x0 - x_t) / sigma^2                      (Tweedie)
  velocity = d alpha/dt x0 + d sigma/dt eps                  (= dx_t/dt along the PF-ODE)
e.g. rectified flow v = eps - x0 and TrigFlow v = cos(t) sigma_d eps - sin(t) x0.

The pure conversions take alpha, sigma (and their time derivatives) as scalars or per-example [B]
arrays. `predictor_from_denoiser` / `denoiser_from_predictor` move a network between an EDM
denoiser D(x, sigma, labels) and any schedule's (x_t, t) coordinates and prediction target.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from onestep_jax.diffusion.preconditioning import expand_to
from onestep_jax.diffusion.schedules import Schedule


def eps_from_x0(*, x_t, x0, alpha, sigma):
  """eps = (x_t - alpha x0) / sigma."""
  return (x_t - expand_to(alpha, x_t) * x0) / expand_to(sigma, x_t)


def x0_from_eps(*, x_t, eps, alpha, sigma):
  """x0 = (x_t - sigma eps) / alpha."""
  return (x_t - expand_to(sigma, x_t) * eps) / expand_to(alpha, x_t)


def score_from_x0(*, x_t, x0, alpha, sigma):
  """Tweedie: grad log p_t(x_t) = (alpha x0 - x_t) / sigma^2."""
  return (expand_to(alpha, x_t) * x0 - x_t) / expand_to(sigma, x_t)**2


def x0_from_score(*, x_t, score, alpha, sigma):
  """x0 = (x_t + sigma^2 score) / alpha."""
  return (x_t + expand_to(sigma, x_t)**2 * score) / expand_to(alpha, x_t)


def velocity_from_x0(*, x_t, x0, alpha, sigma, d_alpha, d_sigma):
  """v = alpha' x0 + sigma' eps, the PF-ODE drift dx_t/dt."""
  eps = eps_from_x0(x_t=x_t, x0=x0, alpha=alpha, sigma=sigma)
  return expand_to(d_alpha, x_t) * x0 + expand_to(d_sigma, x_t) * eps


def x0_from_velocity(*, x_t, velocity, alpha, sigma, d_alpha, d_sigma):
  """Solves v = alpha' x0 + sigma' (x_t - alpha x0) / sigma for x0."""
  a, s, da, ds = (expand_to(v, x_t) for v in (alpha, sigma, d_alpha, d_sigma))
  return (s * velocity - ds * x_t) / (s * da - a * ds)


def _coefficients(schedule: Schedule, t) -> dict:
  return dict(alpha=schedule.alpha(t), sigma=schedule.sigma(t))


def _derivatives(schedule: Schedule, t) -> dict:
  return dict(d_alpha=schedule.d_alpha(t), d_sigma=schedule.d_sigma(t),
              **_coefficients(schedule, t))


_FROM_X0 = {
    'x0': lambda schedule, t, x_t, x0: x0,
    'eps': lambda schedule, t, x_t, x0: eps_from_x0(x_t=x_t, x0=x0, **_coefficients(schedule, t)),
    'score': lambda schedule, t, x_t, x0: score_from_x0(x_t=x_t, x0=x0,
                                                        **_coefficients(schedule, t)),
    'velocity': lambda schedule, t, x_t, x0: velocity_from_x0(x_t=x_t, x0=x0,
                                                              **_derivatives(schedule, t)),
}

_TO_X0 = {
    'x0': lambda schedule, t, x_t, value: value,
    'eps': lambda schedule, t, x_t, value: x0_from_eps(x_t=x_t, eps=value,
                                                       **_coefficients(schedule, t)),
    'score': lambda schedule, t, x_t, value: x0_from_score(x_t=x_t, score=value,
                                                           **_coefficients(schedule, t)),
    'velocity': lambda schedule, t, x_t, value: x0_from_velocity(x_t=x_t, velocity=value,
                                                                 **_derivatives(schedule, t)),
}

PREDICTIONS = tuple(_FROM_X0)


def _check_prediction(prediction: str) -> None:
  if prediction not in _FROM_X0:
    raise ValueError(f'unknown prediction {prediction!r}; valid choices: {list(PREDICTIONS)}')


def from_x0(*, schedule: Schedule, prediction: str, x_t, t, x0):
  """Converts an x0 estimate at (x_t, t) into `prediction` ('x0', 'eps', 'score', 'velocity')."""
  _check_prediction(prediction)
  return _FROM_X0[prediction](schedule, t, x_t, x0)


def to_x0(*, schedule: Schedule, prediction: str, x_t, t, value):
  """Converts a `prediction` ('x0', 'eps', 'score', 'velocity') at (x_t, t) into x0."""
  _check_prediction(prediction)
  return _TO_X0[prediction](schedule, t, x_t, value)


def predictor_from_denoiser(denoiser: Callable, *, schedule: Schedule,
                            prediction: str = 'x0') -> Callable:
  """An EDM denoiser D(x, sigma, labels) seen in `schedule`'s coordinates.

  Returns fn(x_t, t, labels=None) -> `prediction`, using x_t = alpha(t) x^VE at VE noise level
  sigma(t) / alpha(t) (arXiv 2206.00364, Eq. 4 with s(t) = alpha(t)).
  """
  _check_prediction(prediction)

  def predict(x_t, t, labels=None):
    x0 = denoiser(x_t / expand_to(schedule.alpha(t), x_t), schedule.edm_sigma(t), labels)
    return _FROM_X0[prediction](schedule, t, x_t, x0)

  return predict


def denoiser_from_predictor(fn: Callable, *, schedule: Schedule, prediction: str) -> Callable:
  """The EDM denoiser D(x, sigma, labels) of a model fn(x_t, t, labels) trained in `schedule`.

  E.g. a rectified-flow velocity network becomes usable by the EDM samplers and every
  EDM-teacher distillation loss. Inverse of `predictor_from_denoiser`.
  """
  _check_prediction(prediction)

  def denoise(x, sigma, labels=None):
    t = schedule.time_from_edm_sigma(jnp.asarray(sigma, x.dtype))
    x_t = expand_to(schedule.alpha(t), x) * x
    return _TO_X0[prediction](schedule, t, x_t, fn(x_t, t, labels))

  return denoise
