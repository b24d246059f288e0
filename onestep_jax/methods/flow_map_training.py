"""Flow maps trained from data alone, without a teacher, on the students and samplers of the
flow-map distillation methods (onestep_jax.methods.flow_map_distillation):
  meanflow   MeanFlow, Geng et al., arXiv 2505.13447 (the MeanFlow identity through one JVP)
  shortcut   shortcut models, Frans et al., arXiv 2410.12557 (flow matching plus
             self-consistency: one step of 2d equals two model steps of d)
The student F_theta(x_t, t, s) is a fresh network of config.net read as an EDM denoiser (as a
distillation student of the analytic teacher is). `method.reference`, any teacher spec, is only
sampled beside the student for comparison (teacher/<metric>@35).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from onestep_jax.diffusion import flow_maps
from onestep_jax.losses.denoising import flow_matching_loss
from onestep_jax.losses.meanflow import meanflow_loss
from onestep_jax.losses.shortcut import shortcut_self_consistency_loss
from onestep_jax.methods.base import MethodSetup
from onestep_jax.methods.denoisers import NetworkDenoiser
from onestep_jax.methods.flow_map_distillation import FlowMapDistillation, noisy
from onestep_jax.methods.networks import build_network
from onestep_jax.methods.teachers import check_data, load_teacher


class FlowMapTraining(FlowMapDistillation):
  """A flow-map student trained by MeanFlow or shortcut-model losses."""

  def __init__(self, config: ml_collections.ConfigDict, dataset):
    super().__init__(config, dataset)
    if self.m.name == 'shortcut':
      steps = self.m.finest_steps
      if not isinstance(steps, int) or steps < 2 or steps & (steps - 1):
        raise ValueError(f'method.finest_steps must be a power of 2 >= 2, got {steps!r}')
      if not 0 < self.m.self_consistency_fraction < 1:
        raise ValueError('method.self_consistency_fraction must be in (0, 1), got '
                         f'{self.m.self_consistency_fraction}')

  def load_teacher(self, dataset):
    return load_teacher(self.m.reference, dataset) if self.m.reference else None

  def student_network(self) -> NetworkDenoiser:
    return NetworkDenoiser(build_network(self.config.net.name, self.config.net.kwargs),
                           objective='edm', sigma_data=self.m.sigma_data)

  def extra_groups(self) -> tuple[str, ...]:
    return ()

  def losses(self):
    return {'meanflow': self.meanflow_loss, 'shortcut': self.shortcut_loss}

  def meanflow_loss(self, params, batch, key):
    """MeanFlow's loss with the conditional velocity eps - x_0; (t, s) two sorted logit-normal
    times, s = t (flow matching) on a fraction 1 - gap_fraction of the batch (paper Sec. 4.3)."""
    m = self.m
    k_noise, k_time, k_gap = jax.random.split(key, 3)
    x0, noise, labels = self.data(batch, k_noise)
    n = x0.shape[0]
    t, s = flow_maps.sample_times(k_time, n, mean=m.time_mean, std=m.time_std)
    s = jnp.where(jax.random.uniform(k_gap, (n,)) < m.gap_fraction, s, t)
    t, s = self.t_max * t, self.t_max * s
    per_example = meanflow_loss(average_velocity=self.student.bind(params['student']),
                                x_t=noisy(x0, noise, t), t=t, s=s, velocity=noise - x0,
                                labels=labels, p=m.weight_p, c=m.weight_c, tangent=m.tangent,
                                fd_step=m.fd_step)
    return per_example, {'gap_fraction': jnp.mean((s < t).astype(jnp.float32))}

  def shortcut_loss(self, params, batch, key):
    """Shortcut models' loss: self-consistency on the first self_consistency_fraction of the
    batch, flow matching F(x_t, t, t) on the rest (paper Sec. 3 and Algorithm 1).

    Steps 2d = t_max 2^-j with j uniform in {0, ..., log2 M - 1} (the paper spreads the batch
    evenly over the levels), start times t on the grid of multiples of 2d; the half-steps of the
    finest level (d = t_max / M) query the instantaneous velocity. Flow-matching times are
    uniform in (0, t_max).
    """
    m = self.m
    k_noise, k_fm, k_level, k_start = jax.random.split(key, 4)
    x0, noise, labels = self.data(batch, k_noise)
    n = x0.shape[0]
    k = int(round(n * m.self_consistency_fraction))
    part = lambda a, sl: None if a is None else a[sl]
    F = self.student.bind(params['student'])
    levels = int(math.log2(m.finest_steps))
    j = jax.random.randint(k_level, (k,), 0, levels)
    step = 2.0**-j.astype(jnp.float32)
    start = jax.random.randint(k_start, (k,), 1, 2**j + 1).astype(jnp.float32)
    t, s = self.t_max * start * step, self.t_max * (start - 1.0) * step
    consistency = shortcut_self_consistency_loss(
        average_velocity=F, x_t=noisy(x0[:k], noise[:k], t), t=t, s=s,
        labels=part(labels, slice(None, k)), euler=j == levels - 1)
    matching = flow_matching_loss(
        velocity_fn=lambda x, time, lb=None: F(x, time, time, lb), x0=x0[k:],
        t=self.t_max * jax.random.uniform(k_fm, (n - k,)), noise=noise[k:],
        labels=part(labels, slice(k, None)))
    return jnp.concatenate([consistency, matching]), {
        'self_consistency': jnp.mean(consistency), 'flow_matching': jnp.mean(matching)}


def build(config: ml_collections.ConfigDict, dataset) -> MethodSetup:
  """Group 'student' (EMA); one phase 'student'; a frozen 'teacher' group for a network
  reference."""
  return FlowMapTraining(config, dataset).setup()


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """Checks that the data fit the reference model, if any; the student keeps config.net."""
  if config.method.reference:
    check_data(load_teacher(config.method.reference, dataset), dataset,
               conditional=config.data.conditional)
  return config
