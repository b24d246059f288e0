"""Shared pytest set-up: float32 on the CPU, a temporary compilation cache, the path to the
bundled fixtures, and the library's CPU compile options from a clean environment."""
import atexit
import os
import pathlib
import shutil
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Programs the CLI tests compile go to a cache of this session (pytest-xdist's workers and the
# tests' subprocesses inherit it), not the user's ~/.cache/onestep_jax/xla.
if 'ONESTEP_JAX_CACHE_DIR' not in os.environ:
  os.environ['ONESTEP_JAX_CACHE_DIR'] = tempfile.mkdtemp(prefix='onestep_jax_tests_xla_')
  atexit.register(shutil.rmtree, os.environ['ONESTEP_JAX_CACHE_DIR'], ignore_errors=True)

import pytest

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'


@pytest.fixture
def fixtures_dir():
  return FIXTURES


@pytest.fixture
def fresh_xla_cpu_options(monkeypatch):
  """onestep_jax.xla_cpu's options computed afresh, with none of its variables set."""
  from onestep_jax import xla_cpu
  for option in xla_cpu.OPTIONS:
    monkeypatch.delenv(option.env, raising=False)
  xla_cpu.compiler_options.cache_clear()
  yield
  xla_cpu.compiler_options.cache_clear()
