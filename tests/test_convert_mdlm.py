"""MDLM / SDTT checkpoint import: the official backbone reproduced number for number (fixture
from kuleshov-group/mdlm with random weights), other sizes of the family, and error messages."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.convert import mdlm
from onestep_jax.discrete.process import NEG_INF
from onestep_jax.nets.dit import DiT
from test_dit import _random_dit_params


def rel_err(got, ref):
  return float(np.abs(np.asarray(got) - ref).max() / np.abs(ref).max())


def test_fixture_outputs_are_reproduced(fixtures_dir):
  path = fixtures_dir / 'mdlm_dit_tiny.npz'
  model = mdlm.load(path)
  data = np.load(path)
  tokens, sigma = data['inputs/tokens'], data['inputs/sigma']
  assert (model.vocab_size, model.mask_index) == (11, 10)
  assert rel_err(model.logits(tokens, sigma), data['outputs/logits']) <= 1e-4
  log_probs = model.subs_log_probs(tokens, sigma)
  assert rel_err(log_probs, data['outputs/subs_log_probs']) <= 1e-4
  masked = tokens == model.mask_index
  reference = data['outputs/subs_log_probs']
  np.testing.assert_allclose(log_probs[masked][:, :10], reference[masked][:, :10], atol=1e-5)
  assert np.all(np.asarray(log_probs)[..., model.mask_index] < -1e4)
  # The exported state_dict is the fixture's, array for array.
  exported = mdlm.to_state_dict(model.module, model.params)
  assert sorted(exported) == sorted(k[len('state_dict/'):] for k in data.files
                                    if k.startswith('state_dict/'))
  for name, value in exported.items():
    np.testing.assert_array_equal(value, data['state_dict/' + name], err_msg=name)


def test_another_size_round_trips(tmp_path):
  module = DiT(vocab_size=7, hidden_size=48, cond_dim=24, n_heads=4, n_blocks=3, mlp_ratio=2)
  params = _random_dit_params(module, 3)
  for suffix in ('.npz', '.safetensors'):
    mdlm.save(tmp_path / f'model{suffix}', (module, params), mask_index=0)
  model = mdlm.load(tmp_path / 'model.npz')
  assert model.network_kwargs == {'vocab_size': 7, 'hidden_size': 48, 'cond_dim': 24,
                                  'n_heads': 4, 'n_blocks': 3, 'mlp_ratio': 2, 'dropout': 0.0}
  tokens = jnp.array([[0, 3, 0, 6, 1, 0], [2, 0, 0, 0, 5, 4]])
  sigma = jnp.array([0.3, 2.0])
  np.testing.assert_array_equal(model.logits(tokens, sigma),
                                jax.jit(module.apply)({'params': params}, tokens, sigma))
  log_probs = np.asarray(model.subs_log_probs(tokens, sigma))
  assert model.mask_index == 0 and np.all(log_probs[..., 0][tokens != 0] == NEG_INF)
  from_safetensors = mdlm.load(tmp_path / 'model.safetensors')
  assert from_safetensors.network_kwargs == model.network_kwargs
  assert from_safetensors.mask_index == 0
  jax.tree.map(np.testing.assert_array_equal, from_safetensors.params, model.params)


def test_wrapped_safetensors_with_a_config_beside_it(tmp_path, fixtures_dir):
  """SDTT / HF-style files: `backbone.` names and a flat config.json using `hidden_dim`."""
  from safetensors.numpy import save_file
  data = np.load(fixtures_dir / 'mdlm_dit_tiny.npz')
  state = {'backbone.' + k[len('state_dict/'):]: data[k] for k in data.files
           if k.startswith('state_dict/')}
  save_file(state, str(tmp_path / 'model.safetensors'))
  with pytest.raises(ValueError, match='config.json'):
    mdlm.load(tmp_path / 'model.safetensors')
  (tmp_path / 'config.json').write_text(json.dumps(
      {'hidden_dim': 32, 'cond_dim': 16, 'n_heads': 2, 'n_blocks': 2, 'vocab_size': 11}))
  model = mdlm.load(tmp_path / 'model.safetensors')
  assert model.mask_index == 10
  assert rel_err(model.logits(data['inputs/tokens'], data['inputs/sigma']),
                 data['outputs/logits']) <= 1e-4


def _fixture_state(fixtures_dir):
  data = np.load(fixtures_dir / 'mdlm_dit_tiny.npz')
  meta = json.loads(bytes(data['meta_json']).decode())
  return {k[len('state_dict/'):]: data[k] for k in data.files if k.startswith('state_dict/')}, meta


def test_wrong_sizes_name_the_parameter(fixtures_dir):
  state, meta = _fixture_state(fixtures_dir)
  settings = {k: meta['model'][k] for k in mdlm.MODEL_KEYS}
  bad = dict(state)
  bad['blocks.1.mlp.0.weight'] = np.zeros((64, 32), np.float32)
  with pytest.raises(ValueError, match=r'shape mismatch for blocks\.1\.mlp\.0\.weight: .* need '
                                       r'\(128, 32\), the state_dict has \(64, 32\)'):
    mdlm.from_state_dict(bad, model=settings, vocab_size=11)
  with pytest.raises(ValueError,
                     match=r'shape mismatch for (vocab_embed\.embedding|output_layer\.linear)'):
    mdlm.from_state_dict(state, model=settings, vocab_size=12)
  with pytest.raises(ValueError, match=r'missing 10 key\(s\): blocks\.2\.adaLN_modulation\.bias'):
    mdlm.from_state_dict(state, model={**settings, 'n_blocks': 3}, vocab_size=11)
  with pytest.raises(ValueError, match=r'rotary_emb\.inv_freq .* head size 8'):
    mdlm.from_state_dict(state, model={**settings, 'n_heads': 4}, vocab_size=11)
