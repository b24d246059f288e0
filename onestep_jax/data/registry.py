"""`get_dataset(name, **kwargs)`: every data source by name.

Fixed names map to factories (their keyword arguments are the accepted kwargs); any prepared TFDS
image dataset is reached as 'tfds:<builder name>', e.g. 'tfds:cifar10' or
'tfds:imagenet_resized/32x32' (kwargs of TfdsImageDataset), any prepared TFDS text dataset
as 'tfds_text:<builder name>', e.g. 'tfds_text:lm1b' (kwargs of text.load_tfds_text), and a
plain-text file as 'text_file:<path>' (kwargs of text.load_text_file).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

from onestep_jax.data import (arrays, digits, fashion_mnist, image_folder, markov, text,
                              tfds_images, toy2d)
from onestep_jax.data.base import Dataset

TFDS_PREFIX = 'tfds:'
TFDS_TEXT_PREFIX = 'tfds_text:'
TEXT_FILE_PREFIX = 'text_file:'
# Sources whose 'test' split is held out from their default training split 'train'.
TEST_SPLIT_SOURCES = ('arrays', 'digits', 'fashion_mnist', 'pydoc_text')

DATASETS: dict[str, Callable[..., Dataset]] = {
    **toy2d.TOYS,
    'arrays': arrays.load_arrays,
    'image_folder': image_folder.ImageFolderDataset,
    'digits': digits.load_digits_dataset,
    'fashion_mnist': fashion_mnist.load_fashion_mnist,
    'markov': markov.MarkovChainDataset,
    'pydoc_text': text.load_pydoc_text,
}
# Analytic token sources: like the toys, their own held-out data.
ANALYTIC_TOKEN_SOURCES = ('markov',)


def available() -> list[str]:
  """Valid names, with 'tfds:<name>' ('tfds_text:<name>') standing for any prepared TFDS image
  (text) dataset and 'text_file:<path>' for any text file."""
  return sorted(DATASETS) + [TFDS_PREFIX + '<name>', TFDS_TEXT_PREFIX + '<name>',
                             TEXT_FILE_PREFIX + '<path>']


def get_dataset(name: str, **kwargs: Any) -> Dataset:
  """The dataset called `name`, built with `kwargs` (checked against the factory's signature)."""
  if not name:
    raise ValueError(f'no dataset given: pass --config.data.name=<name>; valid names: '
                     f'{available()}')
  if name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX):
    factory = functools.partial(tfds_images.TfdsImageDataset, name[len(TFDS_PREFIX):])
  elif name.startswith(TFDS_TEXT_PREFIX) and len(name) > len(TFDS_TEXT_PREFIX):
    factory = functools.partial(text.load_tfds_text, name[len(TFDS_TEXT_PREFIX):])
  elif name.startswith(TEXT_FILE_PREFIX) and len(name) > len(TEXT_FILE_PREFIX):
    factory = functools.partial(text.load_text_file, name[len(TEXT_FILE_PREFIX):])
  elif name in DATASETS:
    factory = DATASETS[name]
  else:
    raise ValueError(f'unknown dataset {name!r}; valid names: {available()}')
  try:
    inspect.signature(factory).bind(**kwargs)
  except TypeError as e:
    accepted = list(inspect.signature(factory).parameters)
    raise ValueError(f'dataset {name!r}: {e} (accepted arguments: {accepted})') from None
  return factory(**kwargs)


def get_held_out(name: str, **kwargs: Any) -> Optional[Dataset]:
  """The data held out from `get_dataset(name, **kwargs)` for evaluation, or None if none is.

  Analytic toys are their own held-out data: evaluation samples come from a random stream no
  training batch uses. The sources of TEST_SPLIT_SOURCES trained on split 'train' (their
  default) hold out split 'test', and so do text files and TFDS text sets (lm1b, ...) trained
  on 'train'.
  Image folders, TFDS image sets and other splits have none.
  """
  if name in toy2d.TOYS or name in ANALYTIC_TOKEN_SOURCES:
    return get_dataset(name, **kwargs)
  held_out_split = name in TEST_SPLIT_SOURCES or name.startswith((TFDS_TEXT_PREFIX,
                                                                   TEXT_FILE_PREFIX))
  if held_out_split and kwargs.get('split', 'train') == 'train':
    return get_dataset(name, **{**kwargs, 'split': 'test'})
  return None
