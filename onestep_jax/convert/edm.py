"""Import / export of EDM networks (Karras et al. 2022, arXiv 2206.00364; NVlabs/edm).

Exchange format (tests/fixtures/README.md): an `.npz` with `state_dict/<name>` (every parameter and
buffer of the PyTorch preconditioned network, PyTorch layouts, names starting with `model.`) and
`meta_json` (UTF-8 JSON bytes: `precond_class`, `precond_kwargs` = its constructor arguments).
Conv2d weights OIHW <-> HWIO and Linear weights [out, in] <-> [in, out] are transposed here, once.

`load` also reads an EDM `.pkl` directly when torch and the EDM source packages (`dnnlib`,
`torch_utils`) are importable; `pkl_to_npz` converts such a pickle into the npz format, so that
everything afterwards needs neither torch nor pickles. That path is untested here (no torch).
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import pickle
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from onestep_jax.convert.torch_layout import (PathLike, check_keys, read_checkpoint,
                                              read_state_dict_npz, to_flax, to_torch, torch_shape,
                                              write_state_dict_npz)
from onestep_jax.diffusion.preconditioning import EDMCoefficients, edm_coefficients, expand_to
from onestep_jax.nets.dhariwal_unet import DhariwalUNet
from onestep_jax.nets.edm_layers import BUFFERS, resample_kernel
from onestep_jax.nets.song_unet import SongUNet

MODEL_TYPES: dict[str, type[nn.Module]] = {'SongUNet': SongUNet, 'DhariwalUNet': DhariwalUNet}
_MODEL_PREFIX = 'model.'
_SHARED_KWARGS = ('img_resolution', 'img_channels', 'label_dim')
_NET_SHARED = ('img_resolution', 'in_channels', 'out_channels', 'label_dim')


# ----------------------------------------------------------------------------------------------
# Preconditionings (EDM paper, Table 1).


def _vp_sigma(t, kw):
  """VP noise level sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
  return math.sqrt(math.exp(0.5 * kw['beta_d'] * t**2 + kw['beta_min'] * t) - 1)


def _vp_coefficients(sigma, kw) -> EDMCoefficients:
  """VP: c_skip 1, c_out -sigma, c_in 1/sqrt(sigma^2+1), c_noise (M-1) sigma^-1(sigma)."""
  t = (jnp.sqrt(kw['beta_min']**2 + 2 * kw['beta_d'] * jnp.log(1 + sigma**2))
       - kw['beta_min']) / kw['beta_d']
  return EDMCoefficients(c_skip=jnp.ones_like(sigma), c_out=-sigma,
                         c_in=1 / jnp.sqrt(sigma**2 + 1), c_noise=(kw['M'] - 1) * t)


def _ve_coefficients(sigma, kw) -> EDMCoefficients:
  """VE: c_skip 1, c_out sigma, c_in 1, c_noise log(sigma / 2)."""
  del kw
  one = jnp.ones_like(sigma)
  return EDMCoefficients(c_skip=one, c_out=sigma, c_in=one, c_noise=jnp.log(0.5 * sigma))


class _Precond(NamedTuple):
  defaults: Mapping[str, Any]  # constructor options besides img_resolution/img_channels/label_dim
  coefficients: Callable[[jnp.ndarray, Mapping[str, Any]], EDMCoefficients]
  sigma_range: Callable[[Mapping[str, Any]], tuple[float, float]]


PRECONDS: dict[str, _Precond] = {
    'EDMPrecond': _Precond(
        dict(use_fp16=False, sigma_min=0.0, sigma_max=math.inf, sigma_data=0.5,
             model_type='DhariwalUNet'),
        lambda sigma, kw: edm_coefficients(sigma, kw['sigma_data']),
        lambda kw: (kw['sigma_min'], kw['sigma_max'])),
    'VPPrecond': _Precond(
        dict(use_fp16=False, beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5,
             model_type='SongUNet'),
        _vp_coefficients,
        lambda kw: (_vp_sigma(kw['epsilon_t'], kw), _vp_sigma(1.0, kw))),
    'VEPrecond': _Precond(
        dict(use_fp16=False, sigma_min=0.02, sigma_max=100.0, model_type='SongUNet'),
        _ve_coefficients,
        lambda kw: (kw['sigma_min'], kw['sigma_max'])),
}


def _network_kwargs(module: nn.Module) -> dict[str, Any]:
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
          if f.name not in ('parent', 'name')}


def _resolve(precond_class: str, precond_kwargs: Mapping[str, Any]):
  """(full precond kwargs with defaults, the network module) for a preconditioned EDM network."""
  if precond_class not in PRECONDS:
    raise ValueError(f'unknown precond_class {precond_class!r}; valid: {sorted(PRECONDS)}')
  spec = PRECONDS[precond_class]
  missing = [k for k in ('img_resolution', 'img_channels') if k not in precond_kwargs]
  if missing:
    raise ValueError(f'precond_kwargs lacks required option(s) {missing}')
  full = {'label_dim': 0, **spec.defaults, **precond_kwargs}
  model_type = full['model_type']
  if model_type not in MODEL_TYPES:
    raise ValueError(f'unknown model_type {model_type!r}; valid: {sorted(MODEL_TYPES)}')
  cls = MODEL_TYPES[model_type]
  model_kwargs = {k: v for k, v in full.items() if k not in (*_SHARED_KWARGS, *spec.defaults)}
  valid = [f.name for f in dataclasses.fields(cls)
           if f.name not in ('parent', 'name', *_NET_SHARED)]
  unknown = sorted(set(model_kwargs) - set(valid))
  if unknown:
    raise ValueError(f'unknown {model_type} option(s) {unknown}; valid: {sorted(valid)} '
                     f'(and the {precond_class} options {sorted(spec.defaults)})')
  module = cls(img_resolution=full['img_resolution'], in_channels=full['img_channels'],
               out_channels=full['img_channels'], label_dim=full['label_dim'],
               **{k: tuple(v) if isinstance(v, list) else v for k, v in model_kwargs.items()})
  return full, module


# ----------------------------------------------------------------------------------------------
# Name and layout mapping between PyTorch state_dicts and Flax parameters.


def _torch_name(path: tuple[str, ...]) -> str:
  """('enc_8x8_block0', 'conv0', 'weight') -> 'model.enc.8x8_block0.conv0.weight'."""
  head, *rest = path
  for group in ('enc', 'dec'):
    if head.startswith(group + '_'):
      return '.'.join([_MODEL_PREFIX + group, head[len(group) + 1:], *rest])
  return '.'.join([_MODEL_PREFIX + head, *rest])


def _torch_layout(module: nn.Module):
  """PyTorch name -> (Flax path, Flax shape) of every parameter, and name -> value of every
  buffer that is not a parameter here (the resampling filters), found by tracing `init`."""
  x = jnp.zeros((1, module.img_resolution, module.img_resolution, module.in_channels))
  variables = jax.eval_shape(lambda key: module.init(key, x, jnp.zeros((1,))),
                             jax.random.key(0))
  params = {_torch_name(path): (path, leaf.shape)
            for path, leaf in traverse_util.flatten_dict(variables['params']).items()}
  kernel = resample_kernel(module.resample_filter)[None, None]
  buffers = {_torch_name(path): kernel
             for path in traverse_util.flatten_dict(variables.get(BUFFERS, {}))}
  return params, buffers


# ----------------------------------------------------------------------------------------------
# The teacher.


@dataclasses.dataclass(frozen=True, eq=False)
class EDMTeacher:
  """A preconditioned EDM network: D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) (Eq. 7).

  Arrays are NHWC float32. For jit, pass `params=` explicitly (e.g.
  `jax.jit(lambda p, x, s: teacher.denoise(x, s, params=p))`) so that the weights are arguments
  rather than compiled-in constants.
  """
  module: nn.Module  # SongUNet or DhariwalUNet (the raw network F)
  params: Any  # Flax parameters of `module`
  precond_class: str  # 'EDMPrecond', 'VPPrecond' or 'VEPrecond'
  precond_kwargs: Mapping[str, Any]  # all constructor options of the PyTorch precond, defaults filled

  @property
  def model_type(self) -> str:
    return type(self.module).__name__

  @property
  def network_kwargs(self) -> dict[str, Any]:
    """Keyword arguments that rebuild `module` with `MODEL_TYPES[model_type](**kwargs)`."""
    return _network_kwargs(self.module)

  @property
  def sigma_data(self) -> float:
    """sigma_data of EDMPrecond; VP/VE have none and report EDM's default 0.5."""
    return float(self.precond_kwargs.get('sigma_data', 0.5))

  @property
  def sigma_min(self) -> float:
    return float(PRECONDS[self.precond_class].sigma_range(self.precond_kwargs)[0])

  @property
  def sigma_max(self) -> float:
    return float(PRECONDS[self.precond_class].sigma_range(self.precond_kwargs)[1])

  @property
  def label_dim(self) -> int:
    return self.module.label_dim

  @property
  def augment_dim(self) -> int:
    return self.module.augment_dim

  @property
  def img_resolution(self) -> int:
    return self.module.img_resolution

  @property
  def img_channels(self) -> int:
    return self.module.in_channels

  def coefficients(self, sigma) -> EDMCoefficients:
    """c_skip, c_out, c_in, c_noise of this preconditioning at `sigma`."""
    sigma = jnp.asarray(sigma, jnp.float32)
    return PRECONDS[self.precond_class].coefficients(sigma, self.precond_kwargs)

  def raw(self, x_in, c_noise, class_labels=None, augment_labels=None, *, params=None,
          train: bool = False, rngs=None):
    """The raw network F(x_in, c_noise [B], labels) (no preconditioning)."""
    labels = None
    if self.label_dim:
      labels = (jnp.zeros((x_in.shape[0], self.label_dim), jnp.float32) if class_labels is None
                else jnp.reshape(jnp.asarray(class_labels, jnp.float32), (-1, self.label_dim)))
    return self.module.apply({'params': self.params if params is None else params},
                             jnp.asarray(x_in, jnp.float32), jnp.asarray(c_noise, jnp.float32),
                             labels, augment_labels, train=train, rngs=rngs)

  def denoise(self, x, sigma, class_labels=None, augment_labels=None, *, params=None,
              train: bool = False, rngs=None):
    """The denoiser D(x, sigma, labels); sigma is a scalar or [B]; no labels = zero labels."""
    x = jnp.asarray(x, jnp.float32)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],))
    c = self.coefficients(sigma)
    f = self.raw(expand_to(c.c_in, x) * x, c.c_noise, class_labels, augment_labels,
                 params=params, train=train, rngs=rngs)
    return expand_to(c.c_skip, x) * x + expand_to(c.c_out, x) * f


def from_state_dict(state_dict: Mapping[str, np.ndarray], *, precond_class: str,
                    precond_kwargs: Mapping[str, Any]) -> EDMTeacher:
  """An EDMTeacher from a PyTorch-layout state_dict of the preconditioned network."""
  full, module = _resolve(precond_class, precond_kwargs)
  params_spec, buffers = _torch_layout(module)
  check_keys(state_dict, {**params_spec, **buffers}, f'the {module.__class__.__name__} state_dict')
  flat = {}
  for name, (path, shape) in params_spec.items():
    value = np.asarray(state_dict[name], np.float32)
    if value.shape != torch_shape(shape):
      raise ValueError(f'shape mismatch for {name}: the settings need {torch_shape(shape)}, '
                       f'the state_dict has {value.shape}')
    flat[path] = jnp.asarray(to_flax(value))
  for name, kernel in buffers.items():
    value = np.asarray(state_dict[name], np.float32)
    if value.shape != kernel.shape or not np.allclose(value, kernel, rtol=1e-6, atol=0):
      raise ValueError(f'buffer {name} does not match resample_filter='
                       f'{list(module.resample_filter)} of the settings')
  return EDMTeacher(module=module, params=traverse_util.unflatten_dict(flat),
                    precond_class=precond_class, precond_kwargs=full)


def to_state_dict(source) -> dict[str, np.ndarray]:
  """PyTorch-layout state_dict (names `model.*`, buffers included) of an EDMTeacher or of a
  `(module, params)` pair with a SongUNet / DhariwalUNet module."""
  module, params = (source.module, source.params) if isinstance(source, EDMTeacher) else source
  if not isinstance(module, tuple(MODEL_TYPES.values())):
    raise ValueError(f'expected one of {sorted(MODEL_TYPES)}, got {type(module).__name__}')
  params_spec, buffers = _torch_layout(module)
  flat = traverse_util.flatten_dict(params)
  by_path = {path: name for name, (path, _) in params_spec.items()}
  check_keys({_torch_name(p) for p in flat}, params_spec, f'the {type(module).__name__} params')
  out = {}
  for path, value in flat.items():
    value = np.asarray(value, np.float32)
    expected = params_spec[by_path[path]][1]
    if value.shape != expected:
      raise ValueError(f'shape mismatch for {"/".join(path)}: the settings need {expected}, '
                       f'the params have {value.shape}')
    out[by_path[path]] = np.ascontiguousarray(to_torch(value))
  out.update(buffers)
  return out


# ----------------------------------------------------------------------------------------------
# Files.


def save_npz(path: PathLike, source, *, precond_class: Optional[str] = None,
             precond_kwargs: Optional[Mapping[str, Any]] = None) -> None:
  """Writes an EDMTeacher, or a `(module, params)` pair, in the npz layout that `load` reads.

  For a pair, `precond_class` defaults to 'EDMPrecond' and `precond_kwargs` may add options of
  the preconditioning (e.g. sigma_data); the network settings come from the module.
  """
  if isinstance(source, EDMTeacher):
    if precond_class is not None or precond_kwargs is not None:
      raise ValueError('precond_class / precond_kwargs apply only to a (module, params) source; '
                       'an EDMTeacher carries its own')
    precond_class, full = source.precond_class, dict(source.precond_kwargs)
  else:
    module = source[0]
    if not isinstance(module, tuple(MODEL_TYPES.values())):
      raise ValueError(f'expected one of {sorted(MODEL_TYPES)}, got {type(module).__name__}')
    net = _network_kwargs(module)
    if net['in_channels'] != net['out_channels']:
      raise ValueError('EDM preconditioning needs in_channels == out_channels, got '
                       f'{net["in_channels"]} and {net["out_channels"]}')
    kwargs = {'img_resolution': net.pop('img_resolution'), 'img_channels': net.pop('in_channels'),
              'label_dim': net.pop('label_dim'), 'model_type': type(module).__name__}
    del net['out_channels']
    precond_class = precond_class or 'EDMPrecond'
    full, _ = _resolve(precond_class, {**kwargs, **net, **(precond_kwargs or {})})
  full = {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}
  meta = {'precond_class': precond_class, 'precond_kwargs': full,
          'layout': 'NCHW; torch Conv2d weights OIHW; Linear weights [out,in]'}
  write_state_dict_npz(path, to_state_dict(source), meta)


def _read_npz(path: pathlib.Path):
  state_dict, meta = read_state_dict_npz(path)
  missing = [k for k in ('precond_class', 'precond_kwargs') if k not in meta]
  if missing:
    raise ValueError(f'meta_json of {path} lacks {missing}')
  return state_dict, meta['precond_class'], meta['precond_kwargs']


def _read_pkl(path: pathlib.Path, key: str = 'ema'):
  """state_dict and precond settings of the network `key` of an EDM training pickle (torch)."""
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import dnnlib  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import torch_utils  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError(
        f'reading {path} needs torch and the NVlabs/edm source (dnnlib, torch_utils) on '
        'sys.path; run pkl_to_npz where they are installed and load the npz instead') from e
  warnings.warn(f'unpickling {path} executes code stored in it; only load pickles you trust')
  with open(path, 'rb') as f:
    data = pickle.load(f)  # noqa: S301 (EDM checkpoints are pickles)
  net = data[key] if isinstance(data, dict) else data
  if net.init_args:
    raise ValueError(f'{path}: positional constructor arguments are not supported')
  state_dict = {k: v.detach().cpu().float().numpy() for k, v in net.state_dict().items()}
  return state_dict, type(net).__name__, dict(net.init_kwargs)


def pkl_to_npz(pkl_path: PathLike, npz_path: PathLike, *, key: str = 'ema') -> None:
  """Converts an EDM `.pkl` (needs torch + EDM source; executes pickled code) to the npz layout,
  checking on the way that the Flax networks can hold it."""
  pkl_path = pathlib.Path(pkl_path)
  if not pkl_path.is_file():
    raise FileNotFoundError(f'EDM pickle not found: {pkl_path}')
  state_dict, precond_class, precond_kwargs = _read_pkl(pkl_path, key)
  save_npz(npz_path, from_state_dict(state_dict, precond_class=precond_class,
                                     precond_kwargs=precond_kwargs))


_READERS = {'.npz': _read_npz, '.pkl': _read_pkl}


def load(path: PathLike) -> EDMTeacher:
  """An EDMTeacher from an npz in the layout above or (with torch and the EDM source) a `.pkl`."""
  state_dict, precond_class, precond_kwargs = read_checkpoint(path, _READERS, 'EDM')
  return from_state_dict(state_dict, precond_class=precond_class, precond_kwargs=precond_kwargs)
