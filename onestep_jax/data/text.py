"""Text as fixed-length token sequences, for masked diffusion language models.

- 'pydoc_text': a corpus that needs no download, the Python reference manual that every CPython
  ships as `pydoc_data.topics` (the topics joined in name order; 465 K characters on Python
  3.11, and the text changes with the Python version). The tokenized corpus is cut into
  consecutive non-overlapping windows of `length` tokens; window i is in the 'test' split when
  i % 5 == 4 (as digits and user arrays), the rest are 'train', 'all' keeps every window.
- 'text_file:<path>': a user's UTF-8 plain-text file, read whole and cut into windows as above.
- 'tfds_text:<name>' (lm1b, ...): any TFDS dataset with a text feature, prepared as
  array_record; examples are read by index, so every process reads only its own rows.

Every source takes `tokenizer`: None (the default) tokenizes by character, with the characters
of the corpus as vocabulary; the path of a Hugging Face tokenizer.json (data/hf_tokenizer.py)
uses that tokenizer, e.g. the one an imported MDLM checkpoint was trained with.
Batches are {'x': int32 [B, length]} of token ids in [0, vocab_size); the dataset's `tokenizer`
decodes them (onestep_jax.data.tokenizer, whose `mask_id` is vocab_size).
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

from onestep_jax.data.arrays import split_rows
from onestep_jax.data.base import FiniteDataset
from onestep_jax.data.hf_tokenizer import HFTokenizer
from onestep_jax.data.tfds_images import open_prepared
from onestep_jax.data.tokenizer import CharTokenizer, Tokenizer


def pydoc_corpus() -> str:
  """The text of `pydoc_data.topics`: every topic, in name order, one after the other."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  return ''.join(topics.topics[name] for name in sorted(topics.topics))


class TokenSequences(FiniteDataset):
  """Rows of an int32 array [N, length] of token ids, with the tokenizer that made them."""

  def __init__(self, tokens: np.ndarray, *, tokenizer: Tokenizer, name: str):
    if tokens.ndim != 2 or not len(tokens):
      raise ValueError(f'{name}: expected token sequences [N > 0, length], got {tokens.shape}')
    self._tokens = tokens.astype(np.int32)
    self.tokenizer = tokenizer
    self.vocab_size = int(tokenizer.vocab_size)
    self.name = name
    self.num_examples = len(tokens)
    self.example_shape = (tokens.shape[1],)

  def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {'x': self._tokens[indices]}


def make_tokenizer(tokenizer: Optional[str], char_text: Callable[[], str], *,
                   min_count: int) -> Tokenizer:
  """The tokenizer file `tokenizer` (HFTokenizer), or if None a CharTokenizer of the characters
  occurring at least `min_count` times in `char_text()`."""
  if tokenizer is not None:
    return HFTokenizer(tokenizer)
  return CharTokenizer.from_text(char_text(), min_count=min_count)


def text_windows(text: str, *, tokenizer: Optional[str], split: str, length: int,
                 min_count: int, name: str) -> TokenSequences:
  """`split` of `text`, tokenized whole, as consecutive windows of `length` tokens (window i
  held out when i % 5 == 4). Without a tokenizer file, the vocabulary is every character
  occurring at least `min_count` times in the whole text (so both splits share it); rarer
  characters become the tokenizer's unknown id."""
  if length < 1:
    raise ValueError(f'length must be >= 1, got {length}')
  tok = make_tokenizer(tokenizer, lambda: text, min_count=min_count)
  ids = tok.encode(text)
  if len(ids) < length:
    raise ValueError(f'{name}: the text has {len(ids)} tokens, fewer than length={length}')
  windows = ids[:len(ids) // length * length].reshape(-1, length)
  rows = split_rows(len(windows), split)
  return TokenSequences(windows if rows is None else windows[rows], tokenizer=tok, name=name)


def load_pydoc_text(*, split: str = 'train', length: int = 128, min_count: int = 1,
                    tokenizer: Optional[str] = None) -> TokenSequences:
  """`split` of the pydoc corpus as windows of `length` tokens (characters by default)."""
  return text_windows(pydoc_corpus(), tokenizer=tokenizer, split=split, length=length,
                      min_count=min_count, name='pydoc_text')


def load_text_file(path: str, *, split: str = 'train', length: int = 128, min_count: int = 1,
                   tokenizer: Optional[str] = None) -> TokenSequences:
  """`split` of the UTF-8 text file `path` as windows of `length` tokens (characters by
  default); the whole file is read into memory (for large corpora prepare a TFDS dataset)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'text file {path!r} not found')
  with open(path, encoding='utf-8') as f:
    text = f.read()
  return text_windows(text, tokenizer=tokenizer, split=split, length=length,
                      min_count=min_count, name=f'text_file:{path}')


def record_text(record, text_key: Optional[str]) -> str:
  """The text of a source record: its `text_key` field (or the record itself if None), with
  UTF-8 bytes decoded."""
  value = record if text_key is None else record[text_key]
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


class PackedText(FiniteDataset):
  """Fixed-length sequences from a random-access source of variable-length texts.

  Example i is the first `length` tokens of text i, `separator`, text i+1, `separator`, ...
  (wrapping around to text 0): every example starts at the beginning of a text and no padding
  token is needed. Reading example i touches only the texts it spans, so each process reads
  only its own rows of a batch.

  Args:
    source: len() and __getitem__(int) -> record (a TFDS data source, or a list).
    tokenizer: encodes each text.
    length: tokens per example.
    text_key: the record's text field (str or UTF-8 bytes); None if records are the texts.
    separator: text put between consecutive texts.
  """

  def __init__(self, source: Sequence, *, tokenizer: Tokenizer, length: int,
               text_key: Optional[str] = 'text', separator: str = '\n', name: str = 'text'):
    if length < 1 or not len(source):
      raise ValueError(f'{name}: need length >= 1 and a non-empty source, got {length} and '
                       f'{len(source)} texts')
    self._source, self._text_key, self._separator = source, text_key, separator
    self.tokenizer = tokenizer
    self.vocab_size = int(tokenizer.vocab_size)
    self.name = name
    self.num_examples = len(source)
    self.example_shape = (int(length),)

  def text(self, index: int) -> str:
    """Text `index` of the source."""
    return record_text(self._source[int(index)], self._text_key)

  def _example(self, index: int) -> np.ndarray:
    length = self.example_shape[0]
    pieces, total = [], 0
    for k in range(self.num_examples):  # at most one pass over the source
      ids = self.tokenizer.encode(self.text((index + k) % self.num_examples) + self._separator)
      pieces.append(ids)
      total += len(ids)
      if total >= length:
        return np.concatenate(pieces)[:length]
    raise ValueError(f'{self.name}: all texts together are shorter than length={length} tokens')

  def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {'x': np.stack([self._example(i) for i in indices]).astype(np.int32)}


def load_tfds_text(name: str, *, split: str = 'train', data_dir: Optional[str] = None,
                   length: int = 128, text_key: str = 'text', vocab_split: str = 'train',
                   vocab_texts: int = 10_000, min_count: int = 1,
                   separator: str = '\n', tokenizer: Optional[str] = None) -> PackedText:
  """A prepared TFDS text dataset (e.g. 'lm1b') as `length`-token sequences (PackedText).

  Nothing is downloaded: prepare it once with `tfds build <name> --file_format=array_record`.
  Without a tokenizer file, the character vocabulary is that of the first `vocab_texts` texts
  of `vocab_split` (characters seen at least `min_count` times), so every split of the dataset
  shares it.
  """
  builder, source = open_prepared(name, split=split, data_dir=data_dir)
  if text_key not in builder.info.features:
    raise ValueError(f'TFDS dataset {name!r} has no feature {text_key!r}; features: '
                     f'{sorted(builder.info.features.keys())}')

  def char_text():
    vocab_source = open_prepared(name, split=vocab_split, data_dir=data_dir)[1]
    return separator.join(record_text(vocab_source[i], text_key)
                          for i in range(min(vocab_texts, len(vocab_source)))) + separator

  return PackedText(source, tokenizer=make_tokenizer(tokenizer, char_text, min_count=min_count),
                    length=length, text_key=text_key, separator=separator, name=name)
