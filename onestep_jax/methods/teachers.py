"""Frozen teachers for distillation: an analytic mixture or a trained, exported network."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen denoiser D(params, x, sigma, labels) with its parameters and identity."""
  denoise: Callable  # (params, x, sigma, labels) -> x0_hat
  params: Any  # None for analytic teachers
  identity: str  # recorded in checkpoints; a resume with another teacher is refused
  network: Optional[str] = None  # network name, when the teacher is a network
  network_kwargs: Optional[dict] = None
  sigma_data: Optional[float] = None


def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    h.update(np.ascontiguousarray(np.asarray(a, np.float32)).tobytes())
  return h.hexdigest()[:16]


def analytic_teacher(dataset) -> Teacher:
  """The exact denoiser of a dataset that is a Gaussian mixture."""
  mixture = getattr(dataset, 'mixture', None)
  if mixture is None:
    raise ValueError(f'teacher="analytic" needs a Gaussian-mixture dataset; {dataset.name!r} is '
                     'not one. Pass the directory of an exported teacher instead.')
  return Teacher(
      denoise=lambda params, x, sigma, labels=None: mixture.denoise(x, sigma),
      params=None,
      identity=f'analytic:{dataset.name}:{_digest(mixture.weights, mixture.means, mixture.covs)}')


def exported_teacher(path: str) -> Teacher:
  """A teacher trained by this library and exported to `path` (see train.export)."""
  import jax
  from onestep_jax.methods.networks import build_network, flow_denoiser, make_denoiser
  from onestep_jax.train.export import load_exported

  params, network_kwargs, meta = load_exported(path)
  module = build_network(meta['network'], network_kwargs)
  if meta.get('objective', 'edm') == 'edm':
    def denoise(p, x, sigma, labels=None):
      return make_denoiser(module, p, sigma_data=meta['sigma_data'])(x, sigma, labels)
  else:
    def denoise(p, x, sigma, labels=None):
      return flow_denoiser(module, p)(x, sigma, labels)
  leaves = jax.tree.leaves(params)
  return Teacher(denoise=denoise, params=params,
                 identity=f'exported:{os.path.abspath(path)}:{_digest(*[np.ravel(l) for l in leaves])}',
                 network=meta['network'], network_kwargs=network_kwargs,
                 sigma_data=meta.get('sigma_data'))


ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'assets')
BUNDLED = {'digits': os.path.join(ASSETS, 'teacher_digits')}  # 'bundled:<name>' teachers


def load_teacher(spec: str, dataset) -> Teacher:
  """'analytic' (the dataset's exact mixture), 'bundled:<name>', or an exported teacher's path."""
  if spec == 'analytic':
    return analytic_teacher(dataset)
  if spec.startswith('bundled:'):
    name = spec[len('bundled:'):]
    if name not in BUNDLED:
      raise ValueError(f'unknown bundled teacher {name!r}; bundled: {sorted(BUNDLED)}')
    spec = BUNDLED[name]
  if not os.path.exists(spec):
    raise FileNotFoundError(f'teacher {spec!r} is neither "analytic", "bundled:<name>" nor an '
                            'existing export directory')
  return exported_teacher(spec)
