"""Noise schedules x_t = alpha(t) x_0 + sigma(t) eps and their map to EDM's VE noise level.

Every schedule here is a rescaling of the VE process x = x_0 + s eps (Karras et al. 2022,
arXiv 2206.00364, Eq. 1 with s(t) = alpha(t)): x_t = alpha(t) x^VE with s = sigma(t) / alpha(t).
So one EDM denoiser D(x, s) serves every schedule (see parameterization.py).

| schedule | alpha(t) | sigma(t) | VE noise level s(t) |
| --- | --- | --- | --- |
| VE / EDM | 1 | t | t |
| VP (EDM, Table 1) | exp(-B(t)/2) | sqrt(1 - alpha^2) | sqrt(exp(B(t)) - 1) |
| rectified flow | 1 - t | t | t / (1 - t) |
| TrigFlow (sCM, arXiv 2410.11081 Sec. 2) | cos t | sigma_d sin t | sigma_d tan t |

with B(t) = beta_d t^2 / 2 + beta_min t. Times and noise levels are scalars or arrays of any shape.
"""
from __future__ import annotations

import abc
import dataclasses

import jax.numpy as jnp


class Schedule(abc.ABC):
  """x_t = alpha(t) x_0 + sigma(t) eps, with time derivatives and the map to the VE noise level."""

  @abc.abstractmethod
  def alpha(self, t) -> jnp.ndarray:
    """Signal scale alpha(t)."""

  @abc.abstractmethod
  def sigma(self, t) -> jnp.ndarray:
    """Noise scale sigma(t)."""

  @abc.abstractmethod
  def d_alpha(self, t) -> jnp.ndarray:
    """d alpha / dt."""

  @abc.abstractmethod
  def d_sigma(self, t) -> jnp.ndarray:
    """d sigma / dt."""

  @abc.abstractmethod
  def time_from_edm_sigma(self, edm_sigma) -> jnp.ndarray:
    """Inverse of `edm_sigma`: the time at which sigma(t) / alpha(t) equals `edm_sigma`."""

  def edm_sigma(self, t) -> jnp.ndarray:
    """VE noise level sigma(t) / alpha(t) that x_t / alpha(t) carries."""
    return self.sigma(t) / self.alpha(t)


@dataclasses.dataclass(frozen=True)
class VESchedule(Schedule):
  """EDM / variance exploding: x_t = x_0 + t eps, time is the noise level."""

  def alpha(self, t):
    return jnp.ones_like(jnp.asarray(t))

  def sigma(self, t):
    return jnp.asarray(t)

  def d_alpha(self, t):
    return jnp.zeros_like(jnp.asarray(t))

  def d_sigma(self, t):
    return jnp.ones_like(jnp.asarray(t))

  def edm_sigma(self, t):
    return jnp.asarray(t)

  def time_from_edm_sigma(self, edm_sigma):
    return jnp.asarray(edm_sigma)


@dataclasses.dataclass(frozen=True)
class VPSchedule(Schedule):
  """Variance preserving with EDM's VP schedule (arXiv 2206.00364, Table 1), t in [~1e-5, 1]."""

  beta_d: float = 19.9
  beta_min: float = 0.1

  def _beta_integral(self, t):  # B(t) = int_0^t beta = -log alpha(t)^2
    t = jnp.asarray(t)
    return 0.5 * self.beta_d * t**2 + self.beta_min * t

  def alpha(self, t):
    return jnp.exp(-0.5 * self._beta_integral(t))

  def sigma(self, t):
    return jnp.sqrt(-jnp.expm1(-self._beta_integral(t)))

  def d_alpha(self, t):
    return -0.5 * (self.beta_d * jnp.asarray(t) + self.beta_min) * self.alpha(t)

  def d_sigma(self, t):
    return 0.5 * (self.beta_d * jnp.asarray(t) + self.beta_min) * self.alpha(t)**2 / self.sigma(t)

  def edm_sigma(self, t):
    return jnp.sqrt(jnp.expm1(self._beta_integral(t)))

  def time_from_edm_sigma(self, edm_sigma):
    gap = jnp.log1p(jnp.asarray(edm_sigma)**2)
    return (jnp.sqrt(self.beta_min**2 + 2.0 * self.beta_d * gap) - self.beta_min) / self.beta_d


@dataclasses.dataclass(frozen=True)
class RectifiedFlowSchedule(Schedule):
  """Rectified flow: x_t = (1 - t) x_0 + t eps, t in [0, 1]; velocity eps - x_0."""

  def alpha(self, t):
    return 1.0 - jnp.asarray(t)

  def sigma(self, t):
    return jnp.asarray(t)

  def d_alpha(self, t):
    return -jnp.ones_like(jnp.asarray(t))

  def d_sigma(self, t):
    return jnp.ones_like(jnp.asarray(t))

  def time_from_edm_sigma(self, edm_sigma):
    edm_sigma = jnp.asarray(edm_sigma)
    return edm_sigma / (1.0 + edm_sigma)


@dataclasses.dataclass(frozen=True)
class TrigFlowSchedule(Schedule):
  """TrigFlow (sCM): x_t = cos(t) x_0 + sin(t) sigma_d eps, t in [0, pi/2]."""

  sigma_data: float = 0.5

  def alpha(self, t):
    return jnp.cos(t)

  def sigma(self, t):
    return self.sigma_data * jnp.sin(t)

  def d_alpha(self, t):
    return -jnp.sin(t)

  def d_sigma(self, t):
    return self.sigma_data * jnp.cos(t)

  def edm_sigma(self, t):
    return self.sigma_data * jnp.tan(t)

  def time_from_edm_sigma(self, edm_sigma):
    return jnp.arctan(jnp.asarray(edm_sigma) / self.sigma_data)


SCHEDULES = {
    've': VESchedule,
    'vp': VPSchedule,
    'rectified_flow': RectifiedFlowSchedule,
    'trigflow': TrigFlowSchedule,
}


def get_schedule(name: str, **kwargs) -> Schedule:
  """The schedule called `name` (one of SCHEDULES), built with `kwargs`."""
  if name not in SCHEDULES:
    raise ValueError(f'unknown schedule {name!r}; valid choices: {sorted(SCHEDULES)}')
  return SCHEDULES[name](**kwargs)
