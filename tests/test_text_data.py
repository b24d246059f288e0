"""Text sources: the character tokenizer, the pydoc corpus and its split, packed sequences of
variable-length texts read per process, and a prepared TFDS text dataset."""
import pathlib

import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.data.base import global_indices
from onestep_jax.data.registry import get_held_out
from onestep_jax.data.text import PackedText, load_pydoc_text, pydoc_corpus
from onestep_jax.data.tokenizer import MASK_CHAR, UNKNOWN_CHAR, CharTokenizer, Tokenizer
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_char_tokenizer_round_trip_unknown_and_mask_ids():
  text = pydoc_corpus()
  tok = CharTokenizer.from_text(text)
  assert isinstance(tok, Tokenizer)
  assert tok.chars == ''.join(sorted(set(text)))  # deterministic: code-point order
  assert tok.vocab_size == len(set(text)) + 1 and tok.mask_id == tok.vocab_size
  ids = tok.encode(text[:5000])
  assert ids.dtype == np.int32 and ids.max() < tok.unknown_id
  assert tok.decode(ids) == text[:5000]
  # Characters outside the vocabulary map to the unknown id (never dropped), which decodes to
  # U+FFFD; the mask id decodes to MASK_CHAR; other ids are refused.
  odd = 'a\u4e2db'
  np.testing.assert_array_equal(tok.encode(odd), [tok.encode('a')[0], tok.unknown_id,
                                                  tok.encode('b')[0]])
  assert tok.decode(np.append(tok.encode(odd), tok.mask_id)) == f'a{UNKNOWN_CHAR}b{MASK_CHAR}'
  with pytest.raises(ValueError, match='must lie in'):
    tok.decode([tok.mask_id + 1])
  # min_count drops rare characters into the unknown id.
  rare = CharTokenizer.from_text('aaab', min_count=2)
  assert rare.chars == 'a' and list(rare.encode('ab')) == [0, 1]


def test_pydoc_corpus_windows_split_and_batches():
  train, test, every = (load_pydoc_text(split=s, length=64) for s in ('train', 'test', 'all'))
  again = load_pydoc_text(split='train', length=64)
  np.testing.assert_array_equal(again.sample(train.num_examples, seed=0),
                                train.sample(train.num_examples, seed=0))  # deterministic
  # 'all' is the corpus cut into consecutive windows; window i is held out iff i % 5 == 4.
  text = pydoc_corpus()
  assert every.num_examples == len(text) // 64
  whole = every._read(np.arange(every.num_examples))['x']
  assert every.tokenizer.decode(whole) == text[:every.num_examples * 64]
  np.testing.assert_array_equal(test._read(np.arange(test.num_examples))['x'], whole[4::5])
  keep = np.arange(every.num_examples) % 5 != 4
  np.testing.assert_array_equal(train._read(np.arange(train.num_examples))['x'], whole[keep])
  assert train.num_examples + test.num_examples == every.num_examples
  # Registry, held-out split and batches: int32 ids of the vocabulary, split across processes.
  ds = get_dataset('pydoc_text', length=64)
  held_out = get_held_out('pydoc_text', length=64)
  assert ds.example_shape == (64,) and ds.vocab_size == every.tokenizer.vocab_size
  assert held_out.num_examples == test.num_examples
  full = ds.get_batch(3, 8, seed=1)['x']
  assert full.dtype == np.int32 and full.shape == (8, 64)
  assert 0 <= full.min() and full.max() < ds.vocab_size
  parts = [ds.get_batch(3, 8, seed=1, process_index=i, process_count=2)['x'] for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(parts), full)


class CountingSource(list):
  """A list of records that remembers which indices were read."""

  def __init__(self, records):
    super().__init__(records)
    self.read = set()

  def __getitem__(self, i):
    self.read.add(i)
    return super().__getitem__(i)


def test_packed_text_examples_and_per_process_reads():
  texts = ['ab', 'cde', '', 'f', 'ghij']
  tok = CharTokenizer('\nabcdefghij')
  ds = PackedText(CountingSource({'text': t.encode()} for t in texts), tokenizer=tok, length=6)
  examples = ds._read(np.arange(5))['x']
  assert examples.dtype == np.int32 and examples.shape == (5, 6)
  assert [tok.decode(e) for e in examples] == ['ab\ncde', 'cde\n\nf', '\nf\nghi', 'f\nghij',
                                               'ghij\na']  # each starts a text, wraps around

  def spanned(start):  # the texts example `start` is made of
    out, total = set(), 0
    while total < 6:
      out.add((start + len(out)) % 5)
      total += len(texts[max(out, key=lambda i: (i - start) % 5)]) + 1
    return out

  # Each process reads only the texts its own rows span.
  hosts = [PackedText(CountingSource({'text': t} for t in texts), tokenizer=tok, length=6)
           for _ in range(2)]
  full = ds.get_batch(1, 4, seed=3)['x']
  parts = [h.get_batch(1, 4, seed=3, process_index=i, process_count=2)['x']
           for i, h in enumerate(hosts)]
  np.testing.assert_array_equal(np.concatenate(parts), full)
  rows = global_indices(4, 8, seed=3, num_examples=5)
  for i, h in enumerate(hosts):
    assert h._source.read == set().union(*(spanned(r) for r in rows[2 * i:2 * i + 2]))
  assert hosts[0]._source.read != hosts[1]._source.read
  with pytest.raises(ValueError, match='shorter than length=64'):
    PackedText(texts, tokenizer=tok, length=64, text_key=None)._read(np.arange(1))


@pytest.fixture(scope='module')
def tiny_text_tfds_dir(tmp_path_factory):
  """A prepared TFDS text dataset: 12 train and 4 test sentences, as array_record."""
  tfds = pytest.importorskip('tensorflow_datasets')

  class OnestepTinyText(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {'text': tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples('train', 12),
              'test': self._generate_examples('test', 4)}

    def _generate_examples(self, split, num):
      for i in range(num):
        yield i, {'text': f'{split} sentence {i}.'}

  data_dir = str(tmp_path_factory.mktemp('tfds_text'))
  OnestepTinyText(data_dir=data_dir, file_format='array_record').download_and_prepare()
  return data_dir


def test_tfds_text_reader(tiny_text_tfds_dir):
  kwargs = dict(data_dir=tiny_text_tfds_dir, length=24)
  ds = get_dataset('tfds_text:onestep_tiny_text', **kwargs)
  test = get_held_out('tfds_text:onestep_tiny_text', **kwargs)
  assert ds.num_examples == 12 and test.num_examples == 4 and ds.example_shape == (24,)
  assert ds.tokenizer.chars == ''.join(sorted(set('\n .0123456789aceinrst')))
  assert test.tokenizer.chars == ds.tokenizer.chars  # vocabulary of 'train', shared
  assert sorted(ds.text(i) for i in range(12)) == sorted(f'train sentence {i}.' for i in range(12))
  for d in (ds, test):  # example i packs texts i, i+1, ... (TFDS stores them shuffled)
    packed = '\n'.join(d.text(i % d.num_examples) for i in range(3, 6))
    assert d.tokenizer.decode(d._read(np.array([3]))['x'][0]) == packed[:24]
  hosts = [get_dataset('tfds_text:onestep_tiny_text', **kwargs) for _ in range(2)]
  for step in (0, 2):  # step 2 straddles an epoch boundary
    full = ds.get_batch(step, 8, seed=5)['x']
    parts = [h.get_batch(step, 8, seed=5, process_index=i, process_count=2)['x']
             for i, h in enumerate(hosts)]
    np.testing.assert_array_equal(np.concatenate(parts), full)
  with pytest.raises(ValueError, match=r"no feature 'body'; features: \['text'\]"):
    get_dataset('tfds_text:onestep_tiny_text', data_dir=tiny_text_tfds_dir, text_key='body')


def test_text_configs_resolve_the_vocabulary_and_mask_from_the_corpus():
  c = load_config_file(f'{ROOT}/configs/mdlm_text.py')
  dataset = get_dataset(c.data.name, **c.data.kwargs.to_dict())
  c = resolve_config(c, dataset)
  assert c.net.kwargs.vocab_size == dataset.tokenizer.vocab_size + 1
  assert c.method.mask_index == dataset.tokenizer.mask_id
  one_command, from_teacher = (load_config_file(f'{ROOT}/configs/sdtt_text.py{v}')
                               for v in ('', ':runs/mdlm_text'))
  assert one_command.teacher_run.data == one_command.data == c.data
  assert 'teacher_run' not in from_teacher and from_teacher.method.teacher == 'runs/mdlm_text'


def test_tfds_text_with_a_tokenizer_file(tiny_text_tfds_dir, tmp_path):
  pytest.importorskip('tokenizers')
  from onestep_jax.data.hf_tokenizer import HFTokenizer
  from test_hf_tokenizer import train_bpe
  bpe = train_bpe(tmp_path / 'tokenizer.json', pydoc_corpus()[:8000])
  ds = get_dataset('tfds_text:onestep_tiny_text', data_dir=tiny_text_tfds_dir, length=12,
                   tokenizer=bpe)
  assert ds.vocab_size == 300 and isinstance(ds.tokenizer, HFTokenizer)
  packed = '\n'.join(ds.text(i % ds.num_examples) for i in range(3, 9))
  decoded = ds.tokenizer.decode(ds._read(np.array([3]))['x'][0])
  assert len(decoded) > 12 and packed.startswith(decoded)  # texts joined, then cut at 12 tokens
