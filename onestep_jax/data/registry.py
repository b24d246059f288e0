"""`get_dataset(name, **kwargs)`: every data source by name.

Fixed names map to factories (their keyword arguments are the accepted kwargs); any prepared TFDS
image dataset is reached as 'tfds:<builder name>', e.g. 'tfds:cifar10' or
'tfds:imagenet_resized/32x32' (kwargs of TfdsImageDataset).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

from onestep_jax.data import (arrays, digits, fashion_mnist, image_folder, markov, tfds_images,
                              toy2d)
from onestep_jax.data.base import Dataset

TFDS_PREFIX = 'tfds:'
# Sources whose 'test' split is held out from their default training split 'train'.
TEST_SPLIT_SOURCES = ('arrays', 'digits', 'fashion_mnist')

DATASETS: dict[str, Callable[..., Dataset]] = {
    **toy2d.TOYS,
    'arrays': arrays.load_arrays,
    'image_folder': image_folder.ImageFolderDataset,
    'digits': digits.load_digits_dataset,
    'fashion_mnist': fashion_mnist.load_fashion_mnist,
    'markov': markov.MarkovChainDataset,
}
# Analytic token sources: like the toys, their own held-out data.
ANALYTIC_TOKEN_SOURCES = ('markov',)


def available() -> list[str]:
  """Valid names, with 'tfds:<name>' standing for any prepared TFDS image dataset."""
  return sorted(DATASETS) + [TFDS_PREFIX + '<name>']


def get_dataset(name: str, **kwargs: Any) -> Dataset:
  """The dataset called `name`, built with `kwargs` (checked against the factory's signature)."""
  if name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX):
    factory = functools.partial(tfds_images.TfdsImageDataset, name[len(TFDS_PREFIX):])
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
  default) hold out split 'test'. Image folders, TFDS sets and other splits have none.
  """
  if name in toy2d.TOYS or name in ANALYTIC_TOKEN_SOURCES:
    return get_dataset(name, **kwargs)
  if name in TEST_SPLIT_SOURCES and kwargs.get('split', 'train') == 'train':
    return get_dataset(name, **{**kwargs, 'split': 'test'})
  return None
