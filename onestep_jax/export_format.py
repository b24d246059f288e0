"""The export format: parameters readable without the trainer, orbax or jax.

A directory holds `params.safetensors` or `params.npz` (flat arrays keyed 'a/b/c' by their path
in the nested params dict) and `export.json`: {"format", "net_kwargs", "metadata", "dtypes"}.
`train.export.export_params` gathers sharded parameters and writes them through `write_export`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, NamedTuple, Optional

import ml_dtypes  # noqa: F401  (registers bfloat16 & co. with numpy)
import numpy as np

from onestep_jax.atomic import atomic_path

FORMATS = ('safetensors', 'npz')
_SEP = '/'


class Exported(NamedTuple):
  params: dict[str, Any]  # nested dict of numpy arrays.
  net_kwargs: dict[str, Any]  # keyword arguments that rebuild the network module.
  metadata: dict[str, Any]


def flatten(tree: Mapping[str, Any], to_numpy: Callable[[Any], np.ndarray] = np.asarray,
            prefix: str = '') -> dict[str, np.ndarray]:
  """{'a/b/c': array} of a nested dict of arrays; `to_numpy` turns each leaf into numpy."""
  flat = {}
  for k, v in tree.items():
    if not isinstance(k, str) or _SEP in k or not k:
      raise ValueError(f'Cannot export key {prefix + str(k)!r}: keys must be non-empty strings '
                       f'without {_SEP!r}.')
    if isinstance(v, Mapping):
      flat.update(flatten(v, to_numpy, prefix + k + _SEP))
    elif hasattr(v, '__array__') and hasattr(v, 'dtype'):
      flat[prefix + k] = to_numpy(v)
    else:
      raise ValueError(f'Cannot export {prefix + k!r} of type {type(v).__name__}: params must be '
                       f'nested dicts of arrays.')
  return flat


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split(_SEP)
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def check_format(fmt: str) -> None:
  """Raises ValueError unless `fmt` is one of FORMATS."""
  if fmt not in FORMATS:
    raise ValueError(f'Unknown export format {fmt!r}; choose one of {list(FORMATS)}.')


def write_export(directory: str | os.PathLike, flat: Mapping[str, np.ndarray], *,
                 net_kwargs: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None,
                 fmt: str = 'safetensors') -> None:
  """Writes flat numpy arrays (from `flatten`) and JSON-serialisable `net_kwargs` to `directory`.

  export.json marks a complete export: the old one is removed first and the new one written
  last, each file atomically, so a reader never sees a mixed or partial export.
  """
  check_format(fmt)
  os.makedirs(directory, exist_ok=True)
  info = {'format': fmt, 'net_kwargs': dict(net_kwargs), 'metadata': dict(metadata or {}),
          'dtypes': {k: v.dtype.name for k, v in flat.items()}}
  text = json.dumps(info, indent=2)  # fails early on kwargs that JSON cannot hold.
  info_path = os.path.join(directory, 'export.json')
  if os.path.exists(info_path):
    os.remove(info_path)
  with atomic_path(os.path.join(directory, f'params.{fmt}')) as tmp:
    if fmt == 'safetensors':
      from safetensors.numpy import save_file
      save_file({k: np.require(v, requirements='C') for k, v in flat.items()}, tmp)
    else:
      with open(tmp, 'wb') as f:
        np.savez(f, **flat)
  with atomic_path(info_path) as tmp, open(tmp, 'w') as f:
    f.write(text)


def save_export(directory: str | os.PathLike, params: Mapping[str, Any], *,
                net_kwargs: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None,
                fmt: str = 'safetensors') -> None:
  """Writes a nested dict of host-readable arrays (single process) as an export directory."""
  write_export(directory, flatten(params), net_kwargs=net_kwargs, metadata=metadata, fmt=fmt)


def export_directory(path: str | os.PathLike) -> Optional[str]:
  """`path` if it is an export directory, its `export/` if it is the workdir of a run that
  exported one, else None."""
  for directory in (os.path.join(path, 'export'), os.fspath(path)):
    if os.path.isfile(os.path.join(directory, 'export.json')):
      return directory
  return None


def load_exported(directory: str | os.PathLike) -> Exported:
  """Reads an export directory; needs only numpy (and safetensors)."""
  info_path = os.path.join(directory, 'export.json')
  if not os.path.isfile(info_path):
    raise FileNotFoundError(f'No export.json in {os.fspath(directory)!r}; not an export '
                            f'directory.')
  with open(info_path) as f:
    info = json.load(f)
  fmt = info['format']
  if fmt == 'safetensors':
    from safetensors.numpy import load_file
    flat = load_file(os.path.join(directory, 'params.safetensors'))
  elif fmt == 'npz':
    with np.load(os.path.join(directory, 'params.npz')) as data:
      # npz stores bfloat16 & co. as raw bytes; view them back as the recorded dtype.
      flat = {k: v.view(np.dtype(info['dtypes'][k])) for k, v in data.items()}
  else:
    raise ValueError(f'{info_path} names unknown format {fmt!r}; known: {list(FORMATS)}.')
  return Exported(_unflatten(flat), info['net_kwargs'], info['metadata'])
