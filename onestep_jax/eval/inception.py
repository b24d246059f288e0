"""FID Inception-v3 pool3 features in Flax, with weights from a user-provided file.

The network is the one FID is defined with (Heusel et al. 2017, Sec. 3 / App. A.1): the
TensorFlow Inception-v3 of 2015-12-05 as ported by pytorch-fid 0.3.0, with its 2048-d
pool3 output. Images in [0, 1] of any size are resized bilinearly to 299×299 (PyTorch's
`F.interpolate(mode='bilinear', align_corners=False)`, no antialiasing) and mapped to
[−1, 1], exactly as pytorch-fid's `resize_input=True, normalize_input=True`.

Weights are not bundled nor downloaded: `load_inception` reads a PyTorch state_dict whose
names are those of pytorch-fid's `fid_inception_v3()` module (`Conv2d_1a_3x3.conv.weight`,
`Mixed_5b.branch1x1.bn.running_mean`, ..., `fc.weight`), stored as `.npz` or, when torch
is installed, as the original `pt_inception-2015-12-05-6726825d.pth`.
"""
from collections.abc import Mapping
import functools
import os
import pathlib
from typing import Any

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from onestep_jax import xla_cpu
from onestep_jax.convert.torch_layout import name_list, to_flax, torch_shape
from onestep_jax.eval.inception_layers import ConvBN
from onestep_jax.eval.inception_layers import InceptionA
from onestep_jax.eval.inception_layers import InceptionB
from onestep_jax.eval.inception_layers import InceptionC
from onestep_jax.eval.inception_layers import InceptionD
from onestep_jax.eval.inception_layers import InceptionE
from onestep_jax.eval.inception_layers import max_pool_3x3
from onestep_jax.eval.inception_layers import max_pool_3x3_s2

INPUT_SIZE = 299  # Inception-v3 input resolution.
FEATURE_DIM = 2048  # Width of the pool3 features.
SUFFIXES = ('.npz', '.pth', '.pt')  # Weight files `load_inception` reads.
_NPZ_PREFIX = 'state_dict/'  # Optional key prefix (the layout of the reference fixtures).
_MAX_LISTED = 12  # Names listed in an error message before it is truncated.

# Flax leaf (collection, name) -> PyTorch state_dict suffix.
_TORCH_LEAF = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


class FIDInceptionV3(nn.Module):
  """Inception-v3 up to pool3: [B, 299, 299, 3] in [−1, 1] → [B, 2048]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ConvBN(32, (3, 3), strides=2, padding='VALID', name='Conv2d_1a_3x3')(x)
    x = ConvBN(32, (3, 3), padding='VALID', name='Conv2d_2a_3x3')(x)
    x = ConvBN(64, (3, 3), name='Conv2d_2b_3x3')(x)
    x = max_pool_3x3_s2(x)
    x = ConvBN(80, name='Conv2d_3b_1x1')(x)
    x = ConvBN(192, (3, 3), padding='VALID', name='Conv2d_4a_3x3')(x)
    x = max_pool_3x3_s2(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(name='Mixed_7b')(x)
    x = InceptionE(pool=max_pool_3x3, name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


def _check_images(shape: tuple[int, ...], dtype: Any) -> None:
  """Raises ValueError unless `shape`/`dtype` describe float NHWC images with 1 or 3 channels."""
  if len(shape) != 4 or shape[-1] not in (1, 3):
    hint = ''
    if len(shape) == 4 and shape[1] in (1, 3):
      hint = ' (this looks like NCHW: transpose with images.transpose(0, 2, 3, 1))'
    raise ValueError(f'images must be NHWC [B, H, W, C] with C in (1, 3); got shape '
                     f'{tuple(shape)}{hint}')
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'images must be floating point in [0, 1]; got dtype {dtype} '
                     '(for uint8 images use images / 255)')


def preprocess(images: jax.Array) -> jax.Array:
  """pytorch-fid's input transform: [B, H, W, C] in [0, 1] → [B, 299, 299, 3] in [−1, 1].

  Grayscale (C = 1) is repeated to RGB. `jax.image.resize(..., 'bilinear',
  antialias=False)` samples at (i + 0.5)·H/299 − 0.5 with edge clamping, which is PyTorch's
  bilinear `align_corners=False` for both up- and down-sampling (tested to float32
  round-off).
  """
  _check_images(images.shape, images.dtype)
  b, _, _, c = images.shape
  x = jax.image.resize(images.astype(jnp.float32), (b, INPUT_SIZE, INPUT_SIZE, c),
                       'bilinear', antialias=False)
  x = jnp.broadcast_to(x, (b, INPUT_SIZE, INPUT_SIZE, 3))
  return 2.0 * x - 1.0


@functools.cache
def _abstract_variables() -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
  """Flat {path: shape} of the Flax variables, obtained by tracing only (no compute)."""
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  tree = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), x)
  return traverse_util.flatten_dict(tree)


def _torch_name(path: tuple[str, ...]) -> str:
  collection, *modules, leaf = path
  return '.'.join([*modules, _TORCH_LEAF[(collection, leaf)]])


def _is_unused(name: str) -> bool:
  """State-dict entries pool3 does not need: the 1008-way classifier and BN step counters."""
  return name.startswith('fc.') or name.endswith('.num_batches_tracked')


def variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Flax variables of `FIDInceptionV3` from a pytorch-fid Inception state_dict.

  Args:
    state_dict: name → array (PyTorch layout), names as in pytorch-fid's
      `fid_inception_v3()`; `fc.*` and `*.num_batches_tracked` may be present or not and
      are ignored.

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 jax arrays.

  Raises:
    ValueError: naming missing, unexpected or mis-shaped entries.
  """
  paths = {_torch_name(p): p for p in _abstract_variables()}
  given = {k for k in state_dict if not _is_unused(k)}
  missing = sorted(set(paths) - given)
  extra = sorted(given - set(paths))
  problems = []
  if missing:
    problems.append(f'missing {len(missing)} entries: {name_list(missing, _MAX_LISTED)}')
  if extra:
    problems.append(f'unexpected {len(extra)} entries: {name_list(extra, _MAX_LISTED)}')
  if problems:
    raise ValueError('not a pytorch-fid Inception-v3 state_dict: ' + '; '.join(problems))
  flat, bad = {}, []
  for name, path in paths.items():
    value = np.asarray(state_dict[name], dtype=np.float32)
    expected = torch_shape(_abstract_variables()[path].shape)
    if value.shape != expected:
      bad.append(f'{name} has shape {value.shape}, expected {expected}')
      continue
    flat[path] = jnp.asarray(to_flax(value))
  if bad:
    raise ValueError(f'{len(bad)} mis-shaped Inception-v3 entries: {name_list(bad, _MAX_LISTED)}')
  return traverse_util.unflatten_dict(flat)


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Entries of an .npz; if some keys start with 'state_dict/', only those (prefix removed)."""
  with np.load(path, allow_pickle=False) as archive:
    names = archive.files
    if any(n.startswith(_NPZ_PREFIX) for n in names):
      return {n[len(_NPZ_PREFIX):]: archive[n] for n in names if n.startswith(_NPZ_PREFIX)}
    return {n: archive[n] for n in names}


def _read_pth(path: pathlib.Path) -> dict[str, np.ndarray]:
  """A PyTorch state_dict file (e.g. pt_inception-2015-12-05-6726825d.pth); needs torch.

  Untested here (torch is not a test dependency).
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'reading {path} needs torch (pip install onestep_jax[convert]); '
                      'or save the state_dict as .npz elsewhere: numpy.savez(out, '
                      '**{k: v.numpy() for k, v in state_dict.items()})') from e
  state_dict = torch.load(path, map_location='cpu', weights_only=True)
  return {k: v.detach().cpu().numpy() for k, v in state_dict.items()}


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Reads a weights file (`SUFFIXES`) into name → numpy array."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'Inception weights file not found: {path}')
  suffix = path.suffix.lower()
  if suffix == '.npz':
    return _read_npz(path)
  if suffix in ('.pth', '.pt'):
    return _read_pth(path)
  raise ValueError(f'unsupported Inception weights file {path}: suffix {suffix!r} is not '
                   f'one of {SUFFIXES}')


class InceptionFeatures:
  """FID pool3 extractor: NHWC images in [0, 1], any size, 1 or 3 channels → [B, 2048].

  Inside a caller's own jitted function use the pure equivalent
  `FIDInceptionV3().apply(extractor.variables, preprocess(images))`.
  """

  def __init__(self, variables: Mapping[str, Any]):
    self.variables = variables
    # Two jits: inputs of any size share the network's compilation (per batch size).
    self._preprocess = xla_cpu.jit(preprocess)
    self._network = xla_cpu.jit(FIDInceptionV3().apply)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Jitted float32 features [B, 2048] of one batch; no range check."""
    return self._network(self.variables, self._preprocess(images))

  def features(self, images: np.ndarray, *, batch_size: int = 50,
               progress: bool = False) -> np.ndarray:
    """Features of many host images in batches, as a float32 numpy array [N, 2048].

    The last batch is zero-padded to the batch size so that one compilation serves all.

    Args:
      images: [N, H, W, C] floats in [0, 1].
      batch_size: images per forward pass (at most N are used).
      progress: show a tqdm progress bar.

    Raises:
      ValueError: bad shape, dtype, batch size, or values outside [0, 1].
    """
    images = np.asarray(images)
    _check_images(images.shape, images.dtype)
    if batch_size < 1:
      raise ValueError(f'batch_size must be positive; got {batch_size}')
    n = images.shape[0]
    if n == 0:
      raise ValueError('images is empty (N = 0)')
    batch_size = min(batch_size, n)
    outputs = []
    starts = range(0, n, batch_size)
    for start in tqdm.tqdm(starts, desc='Inception features', disable=not progress):
      batch = images[start:start + batch_size]
      lo, hi = float(batch.min()), float(batch.max())
      if lo < 0.0 or hi > 1.0:
        raise ValueError(f'images must lie in [0, 1]; batch at {start} spans [{lo}, {hi}] '
                         '(for images in [-1, 1] use (images + 1) / 2)')
      pad = batch_size - batch.shape[0]
      if pad:
        batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
      outputs.append(self(batch)[:batch_size - pad])
    return np.concatenate([np.asarray(o) for o in outputs])


def load_inception(path: str | os.PathLike[str]) -> InceptionFeatures:
  """Builds the FID feature extractor from a pytorch-fid Inception-v3 weights file.

  Args:
    path: `.npz` of the state_dict (optionally under a 'state_dict/' key prefix) or the
      original `.pth` (needs torch).

  Raises:
    FileNotFoundError: no such file.
    ValueError: unsupported suffix; missing, unexpected or mis-shaped entries.
    ImportError: a `.pth` file without torch installed.
  """
  return InceptionFeatures(variables_from_state_dict(read_state_dict(path)))
