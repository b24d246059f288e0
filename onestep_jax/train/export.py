"""Export of trained parameters (e.g. a generator's EMA) for use without the trainer or orbax.

The format (params.safetensors or params.npz plus export.json) and its reader live in
`onestep_jax.export_format`; this module gathers parameters sharded over devices and processes.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from onestep_jax.export_format import (FORMATS, Exported, check_format, flatten, load_exported,
                                       write_export)

__all__ = ['FORMATS', 'Exported', 'export_params', 'load_exported']


def _host_array(v) -> np.ndarray:
  """A leaf as one numpy array: replicated arrays are read locally, sharded ones gathered."""
  if isinstance(v, jax.Array) and v.is_fully_replicated:
    return np.asarray(v.addressable_data(0))
  if isinstance(v, jax.Array) and not v.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(v, tiled=True))
  return np.asarray(jax.device_get(v))


def export_params(directory: str | os.PathLike, params: Mapping[str, Any], *,
                  net_kwargs: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None,
                  fmt: str = 'safetensors') -> None:
  """Writes `params` (nested dict of arrays) and JSON-serialisable `net_kwargs` to `directory`.

  Only process 0 writes. Multi-host with params sharded over processes (fsdp): call from every
  process, since gathering them is a collective; replicated params need no collective.
  """
  check_format(fmt)
  flat = flatten(params, _host_array)
  if jax.process_index() == 0:
    write_export(directory, flat, net_kwargs=net_kwargs, metadata=metadata, fmt=fmt)
