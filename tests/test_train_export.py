"""Export round trip (params and network kwargs come back without the trainer) and the
compilation-cache helper."""
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.export_format import export_directory
from onestep_jax.train.export import export_params, load_exported

PARAMS = {'Dense_0': {'kernel': jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
                      'bias': jnp.ones(3, jnp.bfloat16)},
          'scale': np.float32(2.5) * np.ones((), np.float32),
          'emb': {'table': {'w': np.arange(4, dtype=np.int32)}}}
KWARGS = {'features': [64, 64], 'activation': 'silu', 'sigma_data': 0.5}


@pytest.mark.parametrize('fmt', ['safetensors', 'npz'])
def test_round_trip(tmp_path, fmt):
  export_params(tmp_path, PARAMS, net_kwargs=KWARGS, metadata={'step': 7, 'group': 'generator'},
                fmt=fmt)
  params, kwargs, metadata = load_exported(tmp_path)
  assert kwargs == KWARGS and metadata == {'step': 7, 'group': 'generator'}
  assert params.keys() == PARAMS.keys()
  for got, want in [(params['Dense_0']['kernel'], PARAMS['Dense_0']['kernel']),
                    (params['Dense_0']['bias'], PARAMS['Dense_0']['bias']),
                    (params['scale'], PARAMS['scale']),
                    (params['emb']['table']['w'], PARAMS['emb']['table']['w'])]:
    assert got.dtype == np.asarray(want).dtype and got.shape == np.shape(want)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_export_directory_of_an_export_or_a_run_workdir(tmp_path):
  export_params(tmp_path / 'run' / 'export', PARAMS, net_kwargs=KWARGS)
  assert export_directory(tmp_path / 'run') == str(tmp_path / 'run' / 'export')
  assert export_directory(tmp_path / 'run' / 'export') == str(tmp_path / 'run' / 'export')
  assert export_directory(tmp_path) is None and export_directory(tmp_path / 'missing') is None


def test_bad_inputs(tmp_path):
  with pytest.raises(ValueError, match="'onnx'.*'safetensors', 'npz'"):
    export_params(tmp_path, PARAMS, net_kwargs={}, fmt='onnx')
  with pytest.raises(ValueError, match="'a/b'"):
    export_params(tmp_path, {'a/b': np.ones(1)}, net_kwargs={})
  with pytest.raises(ValueError, match="'layers' of type list"):
    export_params(tmp_path, {'layers': [np.ones(1)]}, net_kwargs={})
  with pytest.raises(FileNotFoundError, match='export.json'):
    load_exported(tmp_path / 'missing')


def test_compilation_cache_writes_entries(tmp_path):
  """Run in a fresh process: the cache directory is global JAX configuration."""
  code = ('import sys, jax; from onestep_jax.train.compilation_cache import '
          'enable_compilation_cache; enable_compilation_cache(sys.argv[1]); '
          'jax.jit(lambda x: x * 2 + 1)(1.0).block_until_ready()')
  subprocess.run([sys.executable, '-c', code, str(tmp_path / 'cache')], check=True, timeout=120)
  assert any((tmp_path / 'cache').iterdir())
