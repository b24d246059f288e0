"""One device mesh over all devices: the batch is split over 'data' (and 'fsdp'), parameters
are replicated or, for large leaves, sharded over 'fsdp'."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXES = ('data', 'fsdp')


def make_mesh(*, fsdp: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A ('data', 'fsdp') mesh over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f'fsdp={fsdp} must be >= 1 and divide the device count {len(devices)}.')
  auto = (jax.sharding.AxisType.Auto,) * 2
  return jax.make_mesh((len(devices) // fsdp, fsdp), DATA_AXES, axis_types=auto,
                       devices=devices)


def host_pool_collectives(mesh: Mesh) -> bool:
  """True if several devices of `mesh` are CPU devices of this process.

  XLA's CPU client runs every local device on one thread pool of about one thread per device,
  and lets each device queue 32 programs. A host loop that runs that far ahead fills the queues;
  blocked launches of later programs then hold the threads that the other devices need to join
  an earlier program's all-reduce, which aborts after 40 s (xla/pjrt/cpu/cpu_client.cc).
  """
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  return len(local) > 1 and all(d.platform == 'cpu' for d in local)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device."""
  return NamedSharding(mesh, P(DATA_AXES))


def leaf_sharding(shape: Sequence[int], mesh: Mesh, *, fsdp_min_size: int) -> NamedSharding:
  """Shards the largest axis divisible by the 'fsdp' size if the leaf is big enough."""
  n = mesh.shape['fsdp']
  if n == 1 or int(np.prod(shape)) < fsdp_min_size:
    return replicated(mesh)
  candidates = [i for i in np.argsort(shape)[::-1] if shape[i] % n == 0]
  if not candidates:
    return replicated(mesh)
  spec = [None] * len(shape)
  spec[candidates[0]] = 'fsdp'
  return NamedSharding(mesh, P(*spec))


def tree_shardings(tree: Any, mesh: Mesh, *, fsdp_min_size: int) -> Any:
  """`leaf_sharding` for every leaf of `tree` (arrays or ShapeDtypeStructs)."""
  return jax.tree.map(lambda x: leaf_sharding(x.shape, mesh, fsdp_min_size=fsdp_min_size),
                      tree)


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
  """Global arrays from each process's slice of the batch (split along the leading axis)."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)
