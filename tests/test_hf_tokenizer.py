"""Tokenizers read from a Hugging Face tokenizer.json (data/hf_tokenizer.py): the file's ids
verbatim, exact round trips, the mask id, clear errors, and the text sources tokenized with it."""
import sys

import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.data.hf_tokenizer import HFTokenizer
from onestep_jax.data.registry import get_held_out
from onestep_jax.data.text import load_text_file, pydoc_corpus
from onestep_jax.data.tokenizer import MASK_CHAR, Tokenizer

tokenizers = pytest.importorskip('tokenizers')
EOT = '<|endoftext|>'


def train_bpe(path, text, *, vocab_size=300):
  """Writes a GPT-2-style byte-level BPE tokenizer.json trained on `text` (no download);
  returns its path."""
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator([text], trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[EOT],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  tok.save(str(path))
  return str(path)


@pytest.fixture(scope='module')
def bpe_file(tmp_path_factory):
  return train_bpe(tmp_path_factory.mktemp('tok') / 'tokenizer.json', pydoc_corpus()[:8000])


def test_bpe_round_trip_protocol_and_mask(bpe_file):
  tok = HFTokenizer(bpe_file)
  assert isinstance(tok, Tokenizer) and tok.vocab_size == 300 and tok.mask_id == 300
  # Byte-level BPE is lossless, on text it was not trained on too (bytes outside the training
  # text, special tokens written in the text, whitespace runs).
  text = pydoc_corpus()[20_000:24_000] + f' naïve 中文 {EOT}\n\n  end'
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and ids.ndim == 1 and 0 <= ids.min() and ids.max() < 300
  assert len(ids) < len(text.encode())  # merges were learned
  assert tok.decode(ids) == text
  assert list(tok.encode(EOT)) == [tok._tokenizer.token_to_id(EOT)]
  # Mask ids become MASK_CHAR; the runs between them decode on their own; ids must be <= mask.
  a, b = tok.encode('def f(x):'), tok.encode(' return x')
  masked = np.concatenate([[300], a, [300, 300], b, [300]])
  assert tok.decode(masked) == f'{MASK_CHAR}def f(x):{MASK_CHAR * 2} return x{MASK_CHAR}'
  assert tok.decode(masked[None]) == tok.decode(masked)  # any shape, flattened
  with pytest.raises(ValueError, match=r'must lie in \[0, 300\]'):
    tok.decode([301])


def test_ids_are_the_files_and_no_special_tokens_are_added(tmp_path):
  """A BERT-like file: WordLevel ids as written, and a post-processor adding [CLS] ... [SEP]
  that encode must not apply (token sequences are packed without them)."""
  from tokenizers import models, pre_tokenizers, processors
  vocab = {'[UNK]': 0, '[CLS]': 1, '[SEP]': 2, 'the': 3, 'cat': 4, 'sat': 5, '.': 6}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single='[CLS] $A [SEP]', special_tokens=[('[CLS]', 1), ('[SEP]', 2)])
  assert tok.encode('the cat').ids == [1, 3, 4, 2]  # what the package adds by default
  tok.save(str(tmp_path / 'tokenizer.json'))
  ours = HFTokenizer(tmp_path / 'tokenizer.json')
  assert ours.vocab_size == 7 and ours.mask_id == 7
  np.testing.assert_array_equal(ours.encode('the cat sat on the mat.'), [3, 4, 5, 0, 3, 0, 6])


def test_clear_errors(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match='no_such.json'):
    HFTokenizer(tmp_path / 'no_such.json')
  (tmp_path / 'bad.json').write_text('{"not": "a tokenizer"')
  with pytest.raises(ValueError, match="cannot read tokenizer file .*bad.json"):
    HFTokenizer(tmp_path / 'bad.json')
  monkeypatch.setitem(sys.modules, 'tokenizers', None)  # as if not installed
  with pytest.raises(ImportError, match=r"pip install 'onestep_jax\[text\]'"):
    HFTokenizer(tmp_path / 'bad.json')


def test_text_file_windows_with_the_tokenizer(bpe_file, tmp_path):
  text = pydoc_corpus()[30_000:36_000]
  path = tmp_path / 'corpus.txt'
  path.write_text(text, encoding='utf-8')
  every = load_text_file(str(path), split='all', length=16, tokenizer=bpe_file)
  ids = HFTokenizer(bpe_file).encode(text)
  assert every.num_examples == len(ids) // 16 and every.vocab_size == 300
  whole = every._read(np.arange(every.num_examples))['x']
  np.testing.assert_array_equal(whole.reshape(-1), ids[:whole.size])  # consecutive windows
  assert text.startswith(every.tokenizer.decode(whole))
  name = f'text_file:{path}'
  train = get_dataset(name, length=16, tokenizer=bpe_file)
  test = get_held_out(name, length=16, tokenizer=bpe_file)
  np.testing.assert_array_equal(test._read(np.arange(test.num_examples))['x'], whole[4::5])
  assert train.num_examples + test.num_examples == every.num_examples
  # Without a tokenizer file, characters (as pydoc_text); the pydoc corpus takes one too.
  assert get_dataset(name, length=16).tokenizer.chars == ''.join(sorted(set(text)))
  assert get_dataset('pydoc_text', length=64, tokenizer=bpe_file).vocab_size == 300
  with pytest.raises(FileNotFoundError, match='nothing.txt'):
    get_dataset(f'text_file:{tmp_path}/nothing.txt')
  with pytest.raises(ValueError, match='fewer than length=100000'):
    get_dataset(name, length=100_000, tokenizer=bpe_file)
  with pytest.raises(ValueError, match='--config.data.name'):
    get_dataset(None)
