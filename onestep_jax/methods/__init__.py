"""Methods by name: each builds the groups, phases and stages of one training recipe."""
from __future__ import annotations

import importlib

_DISTRIBUTION_MATCHING = 'onestep_jax.methods.distribution_matching'
_FLOW_MAP = 'onestep_jax.methods.flow_map_distillation'
# config.method.name -> module whose `build(config, dataset)` returns a MethodSetup (and whose
# optional `resolve_config(config, dataset)` fills settings taken from the teacher).
METHODS = {
    'teacher': 'onestep_jax.methods.teacher',
    'mdlm': 'onestep_jax.methods.mdlm',
    'sdtt': 'onestep_jax.methods.sdtt',
    'ar': 'onestep_jax.methods.autoregressive',
    'diff_instruct': _DISTRIBUTION_MATCHING,
    'dmd': _DISTRIBUTION_MATCHING,
    'dmd2': _DISTRIBUTION_MATCHING,
    'sid': _DISTRIBUTION_MATCHING,
    'sim': _DISTRIBUTION_MATCHING,
    'fdistill': _DISTRIBUTION_MATCHING,
    'uni_instruct': _DISTRIBUTION_MATCHING,
    'diffratio': 'onestep_jax.methods.diffratio',
    'ayf_emd': _FLOW_MAP,
    'ayf_lmd': _FLOW_MAP,
    'scd': _FLOW_MAP,
    'cd': _FLOW_MAP,
    'pd': _FLOW_MAP,
    'rcm': _FLOW_MAP,
    'ayf_emd_adv': 'onestep_jax.methods.flow_map_adversarial',
    'meanflow': 'onestep_jax.methods.flow_map_training',
    'shortcut': 'onestep_jax.methods.flow_map_training',
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
