"""PyTorch <-> Flax weight layouts, readable lists of state_dict names, and the npz exchange
format of PyTorch state_dicts (`state_dict/<name>` arrays and `meta_json`; see
tests/fixtures/README.md)."""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Iterable, Mapping, Union

import numpy as np

STATE_PREFIX = 'state_dict/'
PathLike = Union[str, os.PathLike]


def to_flax(a: np.ndarray) -> np.ndarray:
  """Conv2d OIHW -> HWIO and Linear [out, in] -> [in, out]; other arrays unchanged."""
  return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T if a.ndim == 2 else a


def to_torch(a: np.ndarray) -> np.ndarray:
  """The inverse of `to_flax`."""
  return a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T if a.ndim == 2 else a


def torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of a Flax parameter shape (see `to_flax`)."""
  if len(flax_shape) == 4:
    return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
  return tuple(reversed(flax_shape)) if len(flax_shape) == 2 else tuple(flax_shape)


def name_list(names: Iterable[str], limit: int = 8) -> str:
  """The first `limit` names, sorted, and how many there are in all."""
  names = sorted(names)
  shown = ', '.join(names[:limit])
  return f'{shown}, ... ({len(names)} in all)' if len(names) > limit else shown


def check_keys(found, expected, what: str) -> None:
  """Raises ValueError naming the keys of `expected` missing from `found`, or the extra ones."""
  missing, unexpected = set(expected) - set(found), set(found) - set(expected)
  if missing:
    raise ValueError(f'{what} is missing {len(missing)} key(s): {name_list(missing)}')
  if unexpected:
    raise ValueError(f'{what} has {len(unexpected)} unexpected key(s): {name_list(unexpected)}')


def write_state_dict_npz(path: PathLike, state_dict: Mapping[str, np.ndarray],
                         meta: Mapping[str, Any]) -> None:
  """Writes the npz next to `path` under a temporary name, then renames it (all or nothing)."""
  path = pathlib.Path(path)
  if not path.parent.is_dir():
    raise FileNotFoundError(f'directory {path.parent} does not exist')
  arrays = {STATE_PREFIX + k: np.asarray(v) for k, v in state_dict.items()}
  arrays['meta_json'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def read_state_dict_npz(path: PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(state_dict, meta) of an npz in the exchange format; ValueError if it has no meta_json."""
  with np.load(path, allow_pickle=False) as data:
    if 'meta_json' not in data.files:
      raise ValueError(f'{path} has no meta_json entry')
    meta = json.loads(bytes(data['meta_json']).decode())
    state_dict = {k[len(STATE_PREFIX):]: data[k] for k in data.files
                  if k.startswith(STATE_PREFIX)}
  return state_dict, meta


def read_checkpoint(path: PathLike, readers: Mapping[str, Any], kind: str):
  """`readers[suffix](path)` for an existing file whose suffix has a reader; clear errors
  naming the `kind` of checkpoint (e.g. 'EDM') otherwise."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{kind} checkpoint not found: {path}')
  if path.suffix not in readers:
    raise ValueError(f'unsupported {kind} checkpoint suffix {path.suffix!r} of {path}; '
                     f'valid: {sorted(readers)}')
  return readers[path.suffix](path)
