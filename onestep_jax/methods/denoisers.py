"""A network together with its parameterisation: the EDM denoiser D(params, x, sigma, labels).

Teachers and the students started from them share one `NetworkDenoiser`, so a generator or fake
score initialised from a flow-matching or VP teacher is read the way the teacher was trained.
Every parameterisation maps (x, sigma) to the network's inputs (x_in, noise_cond) and its raw
output F back to an x0 estimate:
  'edm'  D = c_skip x + c_out F(c_in x, c_noise)  (Karras et al. 2022, arXiv 2206.00364, Eq. 7)
  'vp', 've'  the same form with the VP / VE coefficients of that paper's Table 1
  'flow' a rectified-flow velocity v(x_t, t), x_t = (1 - t) x0 + t n (arXiv 2209.03003)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from onestep_jax.diffusion import parameterization, schedules
from onestep_jax.diffusion.preconditioning import (EDMCoefficients, edm_coefficients, edm_input,
                                                   edm_output, expand_to)
from onestep_jax.methods.networks import network_fn

OBJECTIVES = ('edm', 'vp', 've', 'flow')


def _edm_family_coefficients(objective: str, precond_kwargs: Mapping[str, Any],
                             sigma_data: float) -> Callable[[jnp.ndarray], EDMCoefficients]:
  if objective == 'edm':
    return lambda sigma: edm_coefficients(sigma, sigma_data)
  from onestep_jax.convert.edm import PRECONDS  # VP / VE coefficients of imported checkpoints
  name = {'vp': 'VPPrecond', 've': 'VEPrecond'}[objective]
  kwargs = {**PRECONDS[name].defaults, **precond_kwargs}
  return lambda sigma: PRECONDS[name].coefficients(sigma, kwargs)


@dataclasses.dataclass(frozen=True, eq=False)
class NetworkDenoiser:
  """`module` read as an EDM denoiser under `objective` (one of OBJECTIVES)."""
  module: nn.Module
  objective: str = 'edm'
  sigma_data: float = 0.5
  precond_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # 'vp' / 've' only

  def __post_init__(self):
    if self.objective not in OBJECTIVES:
      raise ValueError(f'unknown network objective {self.objective!r}; valid: {list(OBJECTIVES)}')

  def _inputs(self, x, sigma):
    """(x_in, noise_cond, to_x0) where to_x0(F) turns the raw output into the x0 estimate."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],))
    if self.objective == 'flow':
      schedule = schedules.RectifiedFlowSchedule()
      t = schedule.time_from_edm_sigma(sigma)
      x_t = expand_to(schedule.alpha(t), x) * x
      to_x0 = lambda f: parameterization.to_x0(schedule=schedule, prediction='velocity',
                                               x_t=x_t, t=t, value=f.astype(x.dtype))
      return x_t, t, to_x0
    c = _edm_family_coefficients(self.objective, self.precond_kwargs, self.sigma_data)(sigma)
    return edm_input(c, x), c.c_noise, lambda f: edm_output(c, x, f)

  def denoise(self, params, x, sigma, labels: Optional[jnp.ndarray] = None, *,
              train: bool = False, rng: Optional[jax.Array] = None, **inputs) -> jnp.ndarray:
    """x0 estimate D(x, sigma, labels); `sigma` is a scalar or [B]; `inputs` are extra keyword
    inputs of the network (e.g. the flow maps' `second_time_labels`)."""
    x_in, noise_cond, to_x0 = self._inputs(x, sigma)
    return to_x0(network_fn(self.module, params, train=train, rng=rng)(x_in, noise_cond, labels,
                                                                      **inputs))

  def features(self, params, x, sigma, labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """The network's feature map at (x, sigma): the MLP's last hidden layer or the U-Net
    bottleneck (what discriminator heads read, as in DMD2, arXiv 2405.14867)."""
    x_in, noise_cond, _ = self._inputs(x, sigma)
    return network_fn(self.module, params, return_features=True)(x_in, noise_cond, labels)[1]

  def bind(self, params, **kwargs) -> Callable:
    """The plain callable D(x, sigma, labels) that losses and samplers take."""
    return lambda x, sigma, labels=None: self.denoise(params, x, sigma, labels, **kwargs)
