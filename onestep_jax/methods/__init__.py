"""Methods by name: each builds the groups, phases and stages of one training recipe."""
from __future__ import annotations

import importlib

_DISTRIBUTION_MATCHING = 'onestep_jax.methods.distribution_matching'
# config.method.name -> module whose `build(config, dataset)` returns a MethodSetup (and whose
# optional `resolve_config(config, dataset)` fills settings taken from the teacher).
METHODS = {
    'teacher': 'onestep_jax.methods.teacher',
    'diff_instruct': _DISTRIBUTION_MATCHING,
    'dmd': _DISTRIBUTION_MATCHING,
    'dmd2': _DISTRIBUTION_MATCHING,
    'sid': _DISTRIBUTION_MATCHING,
    'sim': _DISTRIBUTION_MATCHING,
}


def _module(config):
  name = config.method.name
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r}; valid methods: {sorted(METHODS)}')
  return importlib.import_module(METHODS[name])


def build_method(config, dataset):
  """The MethodSetup of `config.method.name`; unknown names list the valid ones."""
  return _module(config).build(config, dataset)


def resolve_method_config(config, dataset):
  """`config` with the method's settings taken from its teacher (a no-op for most methods)."""
  resolve = getattr(_module(config), 'resolve_config', None)
  return config if resolve is None else resolve(config, dataset)
