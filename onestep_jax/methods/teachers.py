"""Frozen teachers for distillation: an analytic mixture, a bundled or exported network of this
library, or an official EDM checkpoint converted to npz.

A network teacher carries its own settings (network, kwargs, objective, sigma_data, classes,
example shape); distillation runs take them from it (`resolve_config`) instead of asking the user
to repeat them, and refuse data that does not fit it before training starts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Optional

import ml_collections
import numpy as np

from onestep_jax.export_format import export_directory
from onestep_jax.methods.denoisers import OBJECTIVES, NetworkDenoiser

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'assets')
BUNDLED = {'digits': os.path.join(ASSETS, 'teacher_digits'),  # 'bundled:<name>' teachers
           'fashion_mnist': os.path.join(ASSETS, 'teacher_fashion_mnist')}
EDM_PREFIX = 'edm:'  # 'edm:<file.npz>': an official EDM checkpoint (onestep_jax.convert.edm)
# Network names of the EDM model types, so that students rebuild an imported teacher.
_EDM_MODEL_NETWORKS = {'SongUNet': 'song_unet', 'DhariwalUNet': 'dhariwal_unet'}
_EDM_PRECOND_OBJECTIVES = {'EDMPrecond': 'edm', 'VPPrecond': 'vp', 'VEPrecond': 've'}


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen denoiser D(params, x, sigma, labels) with its parameters, identity and settings."""
  denoise: Callable  # (params, x, sigma, labels) -> x0_hat
  params: Any  # None for analytic teachers
  identity: str  # content hash; a resume with another teacher is refused
  net: Optional[NetworkDenoiser] = None  # network teachers: module and parameterisation
  network: Optional[str] = None  # network name in onestep_jax.methods.networks.NETWORKS
  network_kwargs: Optional[dict] = None
  example_shape: Optional[tuple] = None  # shape of one example the network takes
  num_classes: int = 0  # one-hot classes the network is conditioned on


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
                     'not one. Train a teacher on it first (e.g. configs/teacher_toy2d.py:<file>) '
                     'and pass --config.method.teacher=<its workdir>')
  return Teacher(
      denoise=lambda params, x, sigma, labels=None: mixture.denoise(x, sigma),
      params=None, example_shape=tuple(dataset.example_shape),
      identity=f'analytic:{dataset.name}:{_digest(mixture.weights, mixture.means, mixture.covs)}')


def network_teacher(*, network: str, network_kwargs: dict, params: Any, objective: str,
                    sigma_data: float, precond_kwargs: Optional[dict] = None,
                    source: str) -> Teacher:
  """A teacher from a network name, its kwargs, parameters and parameterisation."""
  import jax
  from onestep_jax.methods.networks import build_network, example_shape

  if objective not in OBJECTIVES:
    raise ValueError(f'{source} has objective {objective!r}, which is not a diffusion teacher '
                     f'(a one-step student export cannot be distilled); valid: {list(OBJECTIVES)}')
  net = NetworkDenoiser(build_network(network, network_kwargs), objective=objective,
                        sigma_data=float(sigma_data), precond_kwargs=dict(precond_kwargs or {}))
  leaves = [np.ravel(leaf) for leaf in jax.tree.leaves(params)]
  return Teacher(denoise=net.denoise, params=params, net=net, network=network,
                 network_kwargs=dict(network_kwargs),
                 example_shape=example_shape(network, network_kwargs),
                 num_classes=int(network_kwargs.get('label_dim', 0)),
                 identity=f'{objective}:{network}:{_digest(*leaves)}')


def exported_teacher(path: str) -> Teacher:
  """A teacher trained by this library and exported to `path` (see train.export)."""
  from onestep_jax.train.export import load_exported

  params, network_kwargs, meta = load_exported(path)
  for key in ('network', 'objective', 'sigma_data'):
    if key not in meta:
      raise ValueError(f'export {path!r} lacks {key!r} in export.json; it was not written by a '
                       'teacher run of this library')
  return network_teacher(network=meta['network'], network_kwargs=network_kwargs, params=params,
                         objective=meta['objective'], sigma_data=meta['sigma_data'],
                         source=f'export {path!r}')


def edm_checkpoint_teacher(path: str) -> Teacher:
  """An official EDM checkpoint converted to npz (Karras et al. 2022, arXiv 2206.00364)."""
  from onestep_jax.convert.edm import load

  edm = load(path)
  kwargs = dict(edm.network_kwargs)
  return network_teacher(network=_EDM_MODEL_NETWORKS[edm.model_type], network_kwargs=kwargs,
                         params=edm.params, objective=_EDM_PRECOND_OBJECTIVES[edm.precond_class],
                         sigma_data=edm.sigma_data, precond_kwargs=dict(edm.precond_kwargs),
                         source=f'EDM checkpoint {path!r}')


def load_teacher(spec: str, dataset=None) -> Teacher:
  """'analytic' (the dataset's exact mixture), 'bundled:<name>', 'edm:<file.npz>', a teacher
  run's workdir or its export directory."""
  if spec == 'analytic':
    return analytic_teacher(dataset)
  if spec.startswith(EDM_PREFIX):
    return edm_checkpoint_teacher(spec[len(EDM_PREFIX):])
  if spec.startswith('bundled:'):
    name = spec[len('bundled:'):]
    if name not in BUNDLED:
      raise ValueError(f'unknown bundled teacher {name!r}; bundled: {sorted(BUNDLED)}')
    spec = BUNDLED[name]
  exported = export_directory(spec)
  if exported is None:
    raise FileNotFoundError(f'teacher {spec!r} is neither "analytic", "bundled:<name>", '
                            '"edm:<file.npz>", a teacher run\'s workdir nor an export directory')
  return exported_teacher(exported)


def check_data(teacher: Teacher, dataset, *, conditional: bool) -> None:
  """Refuses data whose example shape or classes differ from what the teacher was trained on."""
  shape = tuple(dataset.example_shape)
  if teacher.example_shape is not None and tuple(teacher.example_shape) != shape:
    raise ValueError(f'the teacher takes examples of shape {tuple(teacher.example_shape)}, but '
                     f'dataset {dataset.name!r} has examples of shape {shape}')
  classes = dataset.num_classes if conditional else 0
  if teacher.net is not None and teacher.num_classes != classes:
    raise ValueError(f'the teacher is conditioned on {teacher.num_classes} classes, but the run '
                     f'feeds {classes} (data.conditional={conditional}, dataset {dataset.name!r})')


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """Copies a network teacher's settings into `config` (net, sigma_data, objective) after
  checking that the data fit it, and decides an unset `init_from_teacher` (True for network
  teachers); analytic teachers leave the network settings as they are."""
  teacher = load_teacher(config.method.teacher, dataset)
  check_data(teacher, dataset, conditional=config.data.conditional)
  if config.method.get('init_from_teacher', False) is None:
    config.method.init_from_teacher = teacher.net is not None
  if teacher.net is None:
    return config
  config.net.name = teacher.network
  config.net.kwargs = ml_collections.ConfigDict(teacher.network_kwargs)
  config.method.sigma_data = teacher.net.sigma_data
  config.method.teacher_objective = teacher.net.objective
  return config
