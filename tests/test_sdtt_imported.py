"""configs/sdtt_mdlm.py: SDTT distils an imported MDLM checkpoint with the user's tokenizer file
and text, through the CLI like the small models (metrics, samples decoded to text), and refuses
missing files or a tokenizer that does not match the checkpoint with messages naming the flag or
both vocabulary sizes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from onestep_jax.convert import mdlm
from onestep_jax.data.hf_tokenizer import HFTokenizer
from onestep_jax.data.text import pydoc_corpus
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import run
from onestep_jax.nets.dit import DiT
from test_discrete_mdlm import ROOT
from test_dit import _random_dit_params
from test_hf_tokenizer import train_bpe

CONFIG = f'{ROOT}/configs/sdtt_mdlm.py'
VOCAB = 300  # tokens of the tokenizer; the checkpoint adds the mask


def _checkpoint(path, vocab_size):
  module = DiT(vocab_size=vocab_size, hidden_size=32, cond_dim=16, n_heads=2, n_blocks=1)
  mdlm.save(path, (module, _random_dit_params(module, 0)))
  return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """What a user brings: a checkpoint, its tokenizer file and a text file."""
  d = tmp_path_factory.mktemp('imported')
  (d / 'corpus.txt').write_text(pydoc_corpus()[40_000:48_000], encoding='utf-8')
  return {'tokenizer': train_bpe(d / 'tokenizer.json', pydoc_corpus()[:8000], vocab_size=VOCAB),
          'checkpoint': _checkpoint(d / 'mdlm.npz', VOCAB + 1),
          'text': str(d / 'corpus.txt'), 'dir': d}


def _flags(files):
  """The three required flags and tiny sizes: one round (4 -> 2 steps), 2 steps of batch 8."""
  return {'method.teacher_file': files['checkpoint'], 'data.kwargs.tokenizer': files['tokenizer'],
          'data.name': f'text_file:{files["text"]}', 'data.kwargs.length': 16,
          'method.base_steps': 4, 'method.min_steps': 2, 'method.round_steps': 2,
          'method.sample_steps': (2,), 'method.lr_warmup_steps': 1, 'train.num_steps': 2,
          'train.batch_size': 8, 'train.save_every': 2, 'train.log_every': 1,
          'eval.num_samples': 8, 'eval.batch_size': 8, 'train.compilation_cache': False}


def test_cli_distils_the_checkpoint_and_writes_decoded_samples(files, tmp_path):
  workdir = tmp_path / 'run'
  cli = [sys.executable, str(ROOT / 'experiments' / 'main.py'), f'--config={CONFIG}',
         f'--workdir={workdir}', '--progress=false',
         *(f'--config.{k}={v}' for k, v in _flags(files).items())]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((workdir / 'metrics.json').read_text())
  for model in ('teacher', 'student'):
    for key in (f'{model}/entropy@2', f'{model}/nelbo', f'{model}/tokens_per_s@2'):
      assert np.isfinite(metrics[key]), key
  config = json.loads((workdir / 'config.json').read_text())
  assert config['method']['teacher'] == f'mdlm:{files["checkpoint"]}'
  assert config['net']['kwargs']['vocab_size'] == VOCAB + 1  # the checkpoint's network
  assert config['method']['mask_index'] == VOCAB
  text = (workdir / 'samples_student_nfe2.txt').read_text(encoding='utf-8')
  assert text.count('=== sample ') == 8
  # --mode=sample writes token ids and their decoding by the tokenizer file, sample by sample.
  out = subprocess.run(cli + ['--mode=sample'], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  tok = HFTokenizer(files['tokenizer'])
  for model in ('teacher', 'student'):
    ids = np.load(workdir / f'samples_{model}_nfe2.npy')
    assert ids.shape == (8, 16) and 0 <= ids.min() and ids.max() < VOCAB  # no mask left
    expected = ''.join(f'=== sample {i} ===\n{tok.decode(row)}\n' for i, row in enumerate(ids))
    assert (workdir / f'samples_{model}_nfe2.txt').read_text(encoding='utf-8') == expected


def _config(files, **unset_or_changed):
  c = load_config_file(CONFIG)
  c.update_from_flattened_dict({**_flags(files), **unset_or_changed})
  return c


@pytest.mark.parametrize('field, message', [
    ('method.teacher_file', 'SDTT needs a teacher: pass --config.method.teacher_file='),
    ('data.name', 'no dataset given: pass --config.data.name='),
    # Without the tokenizer file the text is read by character, which the checkpoint refuses.
    ('data.kwargs.tokenizer', r'has 301 token ids .*--config.data.kwargs.tokenizer='),
])
def test_an_unset_required_field_names_its_flag(files, tmp_path, field, message):
  with pytest.raises(ValueError, match=message):
    run(_config(files, **{field: None}), str(tmp_path / 'run'), progress=False)
  assert not (tmp_path / 'run').exists()  # refused before anything is written


def test_a_tokenizer_that_does_not_match_the_checkpoint_is_refused(files, tmp_path):
  wrong = _checkpoint(files['dir'] / 'wider.safetensors', VOCAB + 3)
  with pytest.raises(ValueError, match=r'the teacher has 303 token ids .* has 300 tokens .*'
                                       r"HFTokenizer\('.*tokenizer.json', vocab_size=300\)"):
    run(_config(files, **{'method.teacher_file': wrong}), str(tmp_path / 'run'), progress=False)
