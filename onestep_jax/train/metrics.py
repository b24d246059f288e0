"""Metric history as JSON lines (`metrics.jsonl`), written by process 0 only, and optionally as
TensorBoard events through clu's metric writers (`pip install 'onestep_jax[tensorboard]'`)."""
from __future__ import annotations

import json
import os
import time
from typing import Mapping, Optional

import jax


def tensorboard_writer(logdir: str):
  """clu's TensorBoard SummaryWriter for `logdir`, or None when clu or TensorFlow is missing."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  try:  # TensorFlow only writes files here: keep it off the accelerators JAX uses.
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # its devices were initialised already, by someone else
    pass
  return metric_writers.SummaryWriter(logdir)


class MetricWriter:
  """Appends one JSON object per call: {"step": ..., "time": ..., <name>: <float>, ...}.

  With `tensorboard_dir`, the same scalars also go to TensorBoard event files there when clu
  and TensorFlow are installed (nothing happens without them).
  """

  def __init__(self, path: str | os.PathLike, *, tensorboard_dir: Optional[str] = None):
    self.path = os.fspath(path)
    self._active = jax.process_index() == 0
    self._tensorboard = None
    if self._active:
      os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
      if tensorboard_dir is not None:
        self._tensorboard = tensorboard_writer(tensorboard_dir)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self._active:
      return
    values = {k: float(v) for k, v in metrics.items()}
    record = {'step': int(step), 'time': time.time(), **values}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tensorboard is not None:
      self._tensorboard.write_scalars(int(step), values)
      self._tensorboard.flush()


def read_metrics(path: str | os.PathLike) -> list[dict]:
  """All records of a metrics.jsonl file, in order."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
