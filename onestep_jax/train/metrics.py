"""Metric history as JSON lines (`metrics.jsonl`), written by process 0 only."""
from __future__ import annotations

import json
import os
import time
from typing import Mapping

import jax


class MetricWriter:
  """Appends one JSON object per call: {"step": ..., "time": ..., <name>: <float>, ...}."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self._active = jax.process_index() == 0
    if self._active:
      os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self._active:
      return
    record = {'step': int(step), 'time': time.time(), **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')


def read_metrics(path: str | os.PathLike) -> list[dict]:
  """All records of a metrics.jsonl file, in order."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
