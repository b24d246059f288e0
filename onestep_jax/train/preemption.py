"""SIGTERM as a stop request: long loops (training, feature extraction) finish their current
step, save, and raise `Preempted`, so that schedulers that send SIGTERM before killing lose
nothing and the same command resumes."""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(SystemExit):
  """Raised after SIGTERM once the progress `saved` (e.g. 'step 120') is saved; exit status 143
  (128 + SIGTERM)."""

  def __init__(self, saved: str):
    super().__init__(128 + signal.SIGTERM)
    self.saved = saved


class StopOnSigterm:
  """Context manager: while inside, SIGTERM sets `requested` instead of ending the process
  (main thread only; elsewhere the default handling stays)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True

  def __enter__(self) -> 'StopOnSigterm':
    self.requested = False
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def should_stop(self, at_sync_point: bool) -> bool:
    """Single process: the local flag, at any point. Many processes: they agree, at the sync
    points only (every process must call this at the same ones)."""
    if jax.process_count() == 1:
      return self.requested
    if not at_sync_point:
      return False
    return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))
