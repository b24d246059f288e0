"""Tokenizers of text sources: the interface token models rely on, and a character tokenizer
(tokenizers read from a file: data/hf_tokenizer.py).

Id convention (shared with onestep_jax.discrete and the token methods): a tokenizer's ids are
0 .. vocab_size - 1; the mask token of masked diffusion is one more id, `mask_id == vocab_size`,
which `encode` never produces and the networks add on top of the data's vocabulary
(methods/mdlm.py: `mask_index = dataset.vocab_size`).
"""
from __future__ import annotations

import collections
from typing import Protocol, runtime_checkable

import numpy as np

UNKNOWN_CHAR = '\ufffd'  # how CharTokenizer decodes its unknown-character id
MASK_CHAR = '\u2591'  # how CharTokenizer decodes the mask id (partially masked sequences)


@runtime_checkable
class Tokenizer(Protocol):
  """Text <-> int32 ids in [0, vocab_size); `mask_id` (== vocab_size) is reserved for masking."""

  vocab_size: int

  @property
  def mask_id(self) -> int:
    ...

  def encode(self, text: str) -> np.ndarray:
    """int32 ids [len] of `text`."""

  def decode(self, ids) -> str:
    """The text of ids in [0, vocab_size], the mask id included."""


class CharTokenizer:
  """One id per character of `chars` (in the given order), plus a last id, `unknown_id`, that
  every character outside `chars` encodes to (so encoding never fails and never drops text;
  such characters decode as U+FFFD). vocab_size = len(chars) + 1; mask_id = vocab_size.
  """

  def __init__(self, chars: str):
    if len(set(chars)) != len(chars) or not chars:
      raise ValueError(f'CharTokenizer needs distinct characters, got {chars!r}')
    self.chars = chars
    self.unknown_id = len(chars)
    self.vocab_size = len(chars) + 1
    self._lookup = {c: i for i, c in enumerate(chars)}
    self._table = np.array(list(chars) + [UNKNOWN_CHAR, MASK_CHAR])

  @classmethod
  def from_text(cls, text: str, *, min_count: int = 1) -> 'CharTokenizer':
    """The characters occurring at least `min_count` times in `text`, sorted by code point (a
    deterministic vocabulary: the same text always gives the same ids)."""
    counts = collections.Counter(text)
    return cls(''.join(sorted(c for c, n in counts.items() if n >= min_count)))

  def __repr__(self) -> str:
    return f'CharTokenizer({len(self.chars)} characters, vocab_size={self.vocab_size})'

  @property
  def mask_id(self) -> int:
    return self.vocab_size

  def encode(self, text: str) -> np.ndarray:
    return np.fromiter((self._lookup.get(c, self.unknown_id) for c in text), np.int32,
                       count=len(text))

  def decode(self, ids) -> str:
    return ''.join(self._table[check_ids(ids, self.mask_id).reshape(-1)])


def check_ids(ids, mask_id: int) -> np.ndarray:
  """`ids` as an array, after checking that they lie in [0, mask_id] (what `decode` accepts)."""
  ids = np.asarray(ids)
  if ids.size and (ids.min() < 0 or ids.max() > mask_id):
    raise ValueError(f'ids must lie in [0, {mask_id}] (mask id included), got '
                     f'[{ids.min()}, {ids.max()}]')
  return ids
