"""Export of trained parameters (e.g. a generator's EMA) for use without the trainer or orbax.

A directory holds `params.safetensors` or `params.npz` (flat arrays keyed 'a/b/c' by their path
in the nested params dict) and `export.json`: {"format", "net_kwargs", "metadata", "dtypes"}.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, NamedTuple, Optional

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 & co. with numpy)
import numpy as np

from onestep_jax.atomic import atomic_path
from jax.experimental import multihost_utils

FORMATS = ('safetensors', 'npz')
_SEP = '/'


class Exported(NamedTuple):
  params: dict[str, Any]  # nested dict of numpy arrays.
  net_kwargs: dict[str, Any]  # keyword arguments that rebuild the network module.
  metadata: dict[str, Any]


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, np.ndarray]:
  flat = {}
  for k, v in tree.items():
    if not isinstance(k, str) or _SEP in k or not k:
      raise ValueError(f'Cannot export key {prefix + str(k)!r}: keys must be non-empty strings '
                       f'without {_SEP!r}.')
    if isinstance(v, Mapping):
      flat.update(_flatten(v, prefix + k + _SEP))
    elif isinstance(v, jax.Array) and v.is_fully_replicated:
      flat[prefix + k] = np.asarray(v.addressable_data(0))
    elif isinstance(v, jax.Array) and not v.is_fully_addressable:
      flat[prefix + k] = np.asarray(multihost_utils.process_allgather(v, tiled=True))
    elif isinstance(v, (jax.Array, np.ndarray, np.generic)):
      flat[prefix + k] = np.asarray(jax.device_get(v))
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


def export_params(directory: str | os.PathLike, params: Mapping[str, Any], *,
                  net_kwargs: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None,
                  fmt: str = 'safetensors') -> None:
  """Writes `params` (nested dict of arrays) and JSON-serialisable `net_kwargs` to `directory`.

  Only process 0 writes. Multi-host with params sharded over processes (fsdp): call from every
  process, since gathering them is a collective; replicated params need no collective.
  """
  if fmt not in FORMATS:
    raise ValueError(f'Unknown export format {fmt!r}; choose one of {list(FORMATS)}.')
  flat = _flatten(params)
  if jax.process_index() != 0:
    return
  os.makedirs(directory, exist_ok=True)
  info = {'format': fmt, 'net_kwargs': dict(net_kwargs), 'metadata': dict(metadata or {}),
          'dtypes': {k: v.dtype.name for k, v in flat.items()}}
  text = json.dumps(info, indent=2)  # fails early on kwargs that JSON cannot hold.
  # export.json marks a complete export: drop the old one first, write it last, both atomically.
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


def load_exported(directory: str | os.PathLike) -> Exported:
  """Reads a directory written by `export_params`; needs only numpy (and safetensors)."""
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
