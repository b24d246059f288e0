"""Methods by name: each builds the groups, phases and stages of one training recipe."""
from __future__ import annotations

import importlib

# config.method.name -> module whose `build(config, dataset)` returns a MethodSetup.
METHODS = {
    'teacher': 'onestep_jax.methods.teacher',
    'diff_instruct': 'onestep_jax.methods.diff_instruct',
}


def build_method(config, dataset):
  """The MethodSetup of `config.method.name`; unknown names list the valid ones."""
  name = config.method.name
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r}; valid methods: {sorted(METHODS)}')
  return importlib.import_module(METHODS[name]).build(config, dataset)
