"""Shared pytest set-up: float32 on the CPU and the path to the bundled fixtures."""
import os
import pathlib

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'


@pytest.fixture
def fixtures_dir():
  return FIXTURES
