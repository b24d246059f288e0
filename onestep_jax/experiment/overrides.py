"""Checks `--config.<field>=<value>` overrides before absl parses them, so that a typo gets a
message listing the valid fields instead of a traceback."""
from __future__ import annotations

import importlib.util
import os
from typing import Optional, Sequence

import ml_collections


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`path.py[:variant]` -> get_config(variant), with clear errors for missing files."""
  path, _, variant = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file {path!r} not found')
  module_spec = importlib.util.spec_from_file_location('_onestep_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def unknown_override(config: ml_collections.ConfigDict, argv: Sequence[str]) -> Optional[str]:
  """A message for the first `--config.a.b=...` naming no field of `config`, else None."""
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0].split('.')
    node = config
    for depth, name in enumerate(path):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        where = '.'.join(['config'] + path[:depth])
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        return (f'unknown config field {".".join(["config"] + path[:depth + 1])!r}; '
                f'valid fields of {where}: {valid}')
      node = node[name]
  return None
