"""Flow-map students: a diffusion network conditioned on a second time.

F_theta(x_t, t, s) is the network of a teacher (or a fresh one), read with the teacher's
parameterisation (EDM, VP, VE or flow, onestep_jax.methods.denoisers) at time t in flow-matching
coordinates, and given the gap t - s as its second time input, whose embedding starts at zero
(onestep_jax.nets). So a student started from a teacher's weights has F(x_t, t, s) = v_phi(x_t, t)
for every s: it begins as the teacher's velocity, the flow map of a one-step Euler solver. The
flow map f = x_t + (s - t) F satisfies f(x, t, t) = x exactly (AYF, arXiv 2506.14603, Sec. 3).

Why here and not in onestep_jax.nets: nets are Flax modules only; this is a parameterisation
wrapper around one (as NetworkDenoiser is), with the maths in onestep_jax.diffusion.flow_maps.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from onestep_jax.diffusion import flow_maps
from onestep_jax.methods.denoisers import NetworkDenoiser
from onestep_jax.methods.networks import init_network


@dataclasses.dataclass(frozen=True, eq=False)
class FlowMapNet:
  """F_theta(x_t, t, s) from a network read as the denoiser `net`."""
  net: NetworkDenoiser

  def average_velocity(self, params, x_t, t, s, labels: Optional[jnp.ndarray] = None):
    """F_theta(x_t, t, s): the velocity of the network's x0 estimate at (x_t, t), the network
    being told the gap t - s."""
    gap = t - s

    def denoise(x, sigma, labels=None):
      return self.net.denoise(params, x, sigma, labels, second_time_labels=gap)

    return flow_maps.teacher_velocity(denoise)(x_t, t, labels)

  def bind(self, params) -> Callable:
    """The callable F(x_t, t, s, labels) that losses and samplers take."""
    return lambda x_t, t, s, labels=None: self.average_velocity(params, x_t, t, s, labels)

  def flow_map(self, params) -> Callable:
    """f(x_t, t, s, labels) = x_t + (s - t) F_theta(x_t, t, s, labels)."""
    return flow_maps.flow_map(self.bind(params))

  def init(self, key: jax.Array, *, example_shape, num_classes: int,
           teacher_params: Optional[Any] = None) -> Any:
    """Fresh parameters, or the teacher's plus the second-time embedding layer, which starts at
    zero (its initialiser) and so is made from the parameter shapes alone, without running the
    network's initialisation."""
    init = lambda k: init_network(self.net.module, k, example_shape=example_shape,
                                  num_classes=num_classes, second_time=True)
    if teacher_params is None:
      return init(key)
    shapes = jax.eval_shape(init, key)
    missing = set(teacher_params) - set(shapes)
    if missing:
      raise ValueError(f'the teacher has parameters {sorted(missing)} that the student network '
                       'lacks; it was built with other settings')
    new = {k: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), v) for k, v in shapes.items()
           if k not in teacher_params}
    return {**new, **teacher_params}
