"""Orbax checkpoints of a TrainState: asynchronous, keep-N, never of a non-finite state, and
tied to the identity of the frozen teacher (which is not saved)."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from onestep_jax.train.state import TrainState, all_finite, host_value


class NonFiniteError(FloatingPointError):
  """Raised for NaN/Inf training values under the 'stop' policy or when saving."""


def params_fingerprint(tree: Any) -> str:
  """sha256 (hex) of a pytree's key paths, shapes, dtypes and values.

  Takes host (or fully addressable) arrays, e.g. the teacher as loaded, before sharding.
  """
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    leaf = np.asarray(jax.device_get(leaf))
    h.update(f'{jax.tree_util.keystr(path)}|{leaf.shape}|{leaf.dtype}|'.encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


class Checkpointer:
  """Saves and restores TrainStates under `directory` with orbax.

  Each checkpoint holds the state (all but the frozen groups) and a JSON item with the step and
  `teacher_identity` (e.g. f'{path}:{params_fingerprint(teacher)}'); restoring a checkpoint whose
  identity differs is refused. Use as a context manager, or call `close()`: pending
  asynchronous saves are then finished.
  """

  def __init__(self, directory: str | os.PathLike, *, teacher_identity: str = '',
               max_to_keep: Optional[int] = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    self.teacher_identity = teacher_identity
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'meta'))
    self._all_finite = jax.jit(all_finite)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state: TrainState) -> bool:
    """Starts saving `state` at its step; False if that step is already saved.

    Raises:
      NonFiniteError: if any value of the state is NaN/Inf (nothing is written).
    """
    step = int(host_value(state.step))
    items = state.checkpoint_items()
    if not bool(host_value(self._all_finite(items))):
      raise NonFiniteError(f'Refusing to checkpoint step {step}: the training state holds '
                           f'NaN/Inf values; earlier checkpoints in {self.directory} are kept.')
    if step in self._manager.all_steps():
      return False
    meta = {'step': step, 'teacher_identity': self.teacher_identity}
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)))

  def restore(self, template: TrainState, *, step: Optional[int] = None) -> TrainState:
    """The checkpoint at `step` (default: latest) with `template`'s structure and shardings.

    `template` comes from `Trainer.init_state` and supplies the frozen groups.

    Raises:
      FileNotFoundError: no checkpoint (at that step) in the directory.
      ValueError: the checkpoint was written with a different teacher identity.
    """
    self._manager.wait_until_finished()
    step = self._manager.latest_step() if step is None else step
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(f'No checkpoint{"" if step is None else f" at step {step}"} in '
                              f'{self.directory}; available steps: {self.all_steps()}.')
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    saved_identity = meta['meta']['teacher_identity']
    if saved_identity != self.teacher_identity:
      raise ValueError(f'Checkpoint {self.directory} step {step} was trained with teacher '
                       f'{saved_identity!r}, but the current teacher is '
                       f'{self.teacher_identity!r}; refusing to resume with a different teacher.')
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        template.checkpoint_items())
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
    return template.replace(**restored['state'])

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
