"""Orbax checkpoints of a TrainState: asynchronous, keep-N, never of a non-finite state,
tied to the identity of the frozen teacher (which is not saved), and resumed from the newest
intact one."""
from __future__ import annotations

import contextlib
import hashlib
import os
import logging
import shutil
import sys
import warnings
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from onestep_jax.train.state import TrainState, host_value, shards_all_finite


class NonFiniteError(FloatingPointError):
  """Raised for NaN/Inf training values under the 'stop' policy or when saving."""


class UnreadableCheckpointError(ValueError):
  """Raised when a checkpoint's files are truncated or missing."""


def _reason(error: BaseException) -> str:
  """The first line of the innermost cause of `error`, without TensorStore's spec dump."""
  while error.__cause__ is not None:
    error = error.__cause__
  line = (str(error).splitlines() or [''])[0].split(' [tensorstore_spec')[0]
  line = f'{type(error).__name__}: {line}'
  return line if len(line) <= 200 else line[:197] + '...'


# Step directories being read, or found unreadable, in this process; see _silence_reports_about.
_SILENCED: set[str] = set()


def _is_leftover_report(text: str) -> bool:
  """True for a report about a read left pending by a failed restore: it names a step directory
  being read or found unreadable, or (while there is one) is the 'Event loop is closed' error
  that such a read raises when orbax's background loop is shut down at exit."""
  return bool(_SILENCED) and (any(path in text for path in _SILENCED)
                                or 'Event loop is closed' in text)


def _asyncio_filter(record: logging.LogRecord) -> bool:
  error = record.exc_info[1] if record.exc_info else None
  return not _is_leftover_report(f'{record.getMessage()} {error!r}')


def _silence_reports_about(path: str) -> None:
  """Drops the reports that mention the checkpoint `path` (being read, or unreadable): a failed
  restore leaves orbax's sibling reads pending, and when they are garbage-collected Python prints
  each one's error with TensorStore's 60-line spec ('Exception ignored in <coroutine ...>',
  asyncio's 'exception was never retrieved', or 'coroutine ... was never awaited')."""
  _SILENCED.add(path)
  if not getattr(sys.unraisablehook, 'drops_unreadable_checkpoint_reports', False):
    previous = sys.unraisablehook

    def hook(unraisable):
      if not _is_leftover_report(repr(unraisable.exc_value)):
        previous(unraisable)

    hook.drops_unreadable_checkpoint_reports = True
    sys.unraisablehook = hook
  logging.getLogger('asyncio').addFilter(_asyncio_filter)  # a no-op if already added
  # The reads that a refused shape stopped before they started (see `_restore_step`).
  warnings.filterwarnings('ignore', message="coroutine '_read_array_index_and_device_put' was "
                          'never awaited', category=RuntimeWarning)


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


def latest_saved_step(directory: str | os.PathLike) -> Optional[int]:
  """The newest finalised checkpoint step under `directory`, or None; only reads (a Checkpointer
  creates the directory)."""
  if not os.path.isdir(directory):
    return None
  return max(ocp.utils.checkpoint_steps(directory), default=None)


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
    self._manager = ocp.CheckpointManager(  # handlers known up front: see _check_layout
        self.directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state: TrainState, *, optimizer_layout: Optional[Any] = None) -> bool:
    """Starts saving `state` at its step; False if that step is already saved.
    `optimizer_layout` (JSON), recorded with it, is what `restore`'s `adapt` is given back.

    Raises:
      NonFiniteError: if any value of the state is NaN/Inf (nothing is written).
    """
    step = int(host_value(state.step))
    items = state.checkpoint_items()
    if not shards_all_finite(items):
      raise NonFiniteError(f'Refusing to checkpoint step {step}: the training state holds '
                           f'NaN/Inf values; earlier checkpoints in {self.directory} are kept.')
    if step in self._manager.all_steps():
      return False
    meta = {'step': step, 'teacher_identity': self.teacher_identity}
    if optimizer_layout is not None:
      meta['optimizer_layout'] = optimizer_layout
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)))

  def restore(self, template: TrainState, *, step: Optional[int] = None,
              adapt: Optional[Callable[[Any], Any]] = None) -> TrainState:
    """The checkpoint at `step` (default: the newest intact one) with `template`'s structure and
    shardings. `adapt(optimizer_layout)`, given the layout the checkpoint recorded (None if
    none), may return `(stored, convert)`: the checkpoint is then read into the template
    `stored` and returned as `convert(state)` (see `Trainer.restore`).

    `template` comes from `Trainer.init_state` and supplies the frozen groups. Without `step`, a
    newer checkpoint that cannot be read is skipped with a line on stderr and moved aside to
    `<step>.broken`, so that this step can be saved again.

    Raises:
      FileNotFoundError: no checkpoint (at that step) in the directory.
      UnreadableCheckpointError: the checkpoint at `step`, or every checkpoint, cannot be read.
      ValueError: the checkpoint was written with a different teacher identity.
    """
    self._manager.wait_until_finished()
    available = self.all_steps()
    if not available or (step is not None and step not in available):
      raise FileNotFoundError(f'No checkpoint{"" if step is None else f" at step {step}"} in '
                              f'{self.directory}; available steps: {available}.')
    broken = []
    for s in sorted(available, reverse=True) if step is None else [step]:
      try:
        state = self._restore_step(template, s, adapt)
      except UnreadableCheckpointError as e:
        broken.append((s, str(e)))
        continue
      if broken:
        self._set_aside(broken, restored=s)
      return state
    raise UnreadableCheckpointError(
        f'No intact checkpoint in {self.directory}: '
        + '; '.join(f'step {s} cannot be read ({reason})' for s, reason in broken))

  @contextlib.contextmanager
  def _reading(self, step: int):
    """Turns any error of reading `step` into UnreadableCheckpointError (orbax and TensorStore
    raise many types for damaged files), without their leftover reports.

    The reports are silenced before the read: a sibling read that failed too can be collected,
    and reported, while orbax's frames unwind, before any handler here runs."""
    path = os.path.join(self.directory, str(step), '')
    known_unreadable = path in _SILENCED
    _silence_reports_about(path)
    try:
      yield
    except Exception as e:
      raise UnreadableCheckpointError(_reason(e)) from None
    if not known_unreadable:
      _SILENCED.discard(path)

  def _restore_step(self, template: TrainState, step: int,
                    adapt: Optional[Callable[[Any], Any]]) -> TrainState:
    with self._reading(step):
      meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    saved_identity = meta['meta']['teacher_identity']
    if saved_identity != self.teacher_identity:
      raise ValueError(f'Checkpoint {self.directory} step {step} was trained with teacher '
                       f'{saved_identity!r}, but the current teacher is '
                       f'{self.teacher_identity!r}; refusing to resume with a different teacher.')
    adapted = None if adapt is None else adapt(meta['meta'].get('optimizer_layout'))
    stored, convert = (template, None) if adapted is None else adapted
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        stored.checkpoint_items())
    try:
      with self._reading(step):
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))
    except UnreadableCheckpointError:
      # Checked only now (reading the metadata took half of a U-Net state's restore): another
      # layout is this run's error, not a damaged checkpoint to set aside.
      self._check_layout(step, target)
      raise
    state = stored.replace(**restored['state'])
    return state if convert is None else convert(state)

  def _check_layout(self, step: int, target: Any) -> None:
    """Raises ValueError if the checkpoint's arrays are not the shapes `target` expects (another
    network, or optimizer states in another layout: see `Trainer(packed_update=...)`)."""
    with self._reading(step):
      saved = self._manager.item_metadata(step)['state']
      saved_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(
          saved, is_leaf=lambda x: hasattr(x, 'shape')))
    if not saved_shapes:
      raise UnreadableCheckpointError('its state has no array metadata')
    expected = sorted(tuple(x.shape) for x in jax.tree.leaves(target))
    if saved_shapes != expected:
      only_saved = sorted(set(saved_shapes) - set(expected))[:3]
      only_expected = sorted(set(expected) - set(saved_shapes))[:3]
      raise ValueError(
          f'Checkpoint {self.directory} step {step} holds {len(saved_shapes)} arrays that do not '
          f'match the {len(expected)} of this run (shapes only in the checkpoint: {only_saved}; '
          f'only in this run: {only_expected}). Was it written with another network, or by '
          'onestep_jax before 4 December 2026, whose optimizer states were per leaf? Such runs '
          'resume with --config.train.packed_update=false (Trainer(packed_update=False)).')

  def _set_aside(self, broken: list[tuple[int, str]], *, restored: int) -> None:
    """Moves unreadable steps out of orbax's sight (process 0), reporting each on stderr."""
    if jax.process_index() == 0:
      for step, reason in broken:
        path = os.path.join(self.directory, str(step))
        shutil.rmtree(path + '.broken', ignore_errors=True)
        os.rename(path, path + '.broken')
        print(f'skipped checkpoint step {step}: it cannot be read ({reason}); moved it to '
              f'{path}.broken and restored step {restored}', file=sys.stderr)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('onestep_jax checkpoint set-aside')
    self._manager.reload()

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
