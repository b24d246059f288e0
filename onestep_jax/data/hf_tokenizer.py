"""A tokenizer read from a user's Hugging Face `tokenizer.json` file, through the `tokenizers`
package (extra 'text'). It gives the exact ids of the tokenizer a checkpoint was trained with:
GPT-2's byte-level BPE for MDLM's and SDTT's OpenWebText models (50257 tokens, their mask being
id 50257), BERT's WordPiece for lm1b. Nothing is downloaded.

Ids follow onestep_jax.data.tokenizer: 0 .. vocab_size - 1 (added tokens included), and
`mask_id == vocab_size`, which `encode` never produces and `decode` shows as MASK_CHAR.
"""
from __future__ import annotations

import os

import numpy as np

from onestep_jax.data.tokenizer import MASK_CHAR, check_ids

EXTRA = 'text'  # setup.py extra that installs `tokenizers`


def _tokenizers_module():
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading a tokenizer file needs the 'tokenizers' package: "
                      f"pip install 'onestep_jax[{EXTRA}]' (or pip install tokenizers)") from e
  return tokenizers


class HFTokenizer:
  """The tokenizer of a `tokenizer.json` file. Text is encoded without the special tokens a
  post-processor would add around it ([CLS] ... [SEP]); special tokens written in the text
  itself, such as GPT-2's '<|endoftext|>', encode to their ids and decode back to their text.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: the file is not a tokenizer the package can read.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    tokenizers = _tokenizers_module()
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f'tokenizer file {self.path!r} not found (give the tokenizer.json '
                              'that came with the checkpoint)')
    try:
      self._tokenizer = tokenizers.Tokenizer.from_file(self.path)
    except Exception as e:  # the package raises a bare Exception for every parse error
      raise ValueError(f'cannot read tokenizer file {self.path!r} as a Hugging Face '
                       f'tokenizer.json: {e}') from None
    self.vocab_size = int(self._tokenizer.get_vocab_size(with_added_tokens=True))

  def __repr__(self) -> str:
    return f'HFTokenizer({self.path!r}, vocab_size={self.vocab_size})'

  @property
  def mask_id(self) -> int:
    return self.vocab_size

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids) -> str:
    """The text of ids [...] (flattened); each mask id becomes MASK_CHAR, and the runs of tokens
    between masks are decoded separately."""
    ids = check_ids(ids, self.mask_id).reshape(-1)
    cuts = np.flatnonzero(ids == self.mask_id)
    runs = np.split(ids, cuts)  # every run after the first starts with its mask id
    texts = [self._tokenizer.decode(run[int(i > 0):].tolist(), skip_special_tokens=False)
             for i, run in enumerate(runs)]
    return MASK_CHAR.join(texts)
