"""Atomic file output: write to a temporary file beside the target, then rename over it."""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path in the target's directory; renames it to `path` on success.

  Readers never see a half-written file; on error the temporary file is removed and `path` is
  left untouched. The parent directory must exist.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'directory {directory} does not exist (writing {path})')
  # A fresh unique name rather than mkstemp, so the file gets the usual umask permissions.
  tmp = os.path.join(directory, f'.{os.path.basename(path)}.{uuid.uuid4().hex}.tmp')
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
