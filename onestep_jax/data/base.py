"""The interface every data source implements, and its deterministic, process-sliced batch order.

A global batch is a pure function of (seed, step, batch_size): it never depends on the number
of processes, so a run resumes exactly from its step counter and N hosts together see the batch
a single host would. Each process materialises only its own contiguous block of rows.
"""
from __future__ import annotations

import abc
import functools
from typing import Callable, Optional

import numpy as np

from onestep_jax.data.gaussian_mixture import GaussianMixture

# Stream tags: independent numpy streams per purpose (SeedSequence spawn keys), so evaluation
# samples never coincide with training batches and epoch orders never with either.
_STREAM_BATCH = 0
_STREAM_EPOCH = 1
_STREAM_EVAL = 2


def _check_nonnegative_int(value, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f'{what} must be a non-negative integer, got {value!r}')
  return int(value)


def make_rng(seed: int, *stream: int) -> np.random.Generator:
  """A numpy generator for one (seed, stream...) pair; distinct streams are independent."""
  seed = _check_nonnegative_int(seed, 'seed')
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=stream))


def process_rows(batch_size: int, *, process_index: int = 0, process_count: int = 1) -> slice:
  """The rows [lo, hi) of a global batch that belong to `process_index` of `process_count`."""
  batch_size = _check_nonnegative_int(batch_size, 'batch_size')
  process_count = _check_nonnegative_int(process_count, 'process_count')
  process_index = _check_nonnegative_int(process_index, 'process_index')
  if batch_size == 0 or process_count == 0:
    raise ValueError(f'batch_size and process_count must be positive, got {batch_size} and '
                     f'{process_count}')
  if process_index >= process_count:
    raise ValueError(f'process_index {process_index} is out of range for process_count '
                     f'{process_count}')
  if batch_size % process_count:
    raise ValueError(f'global batch_size {batch_size} is not divisible by process_count '
                     f'{process_count}')
  per_process = batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order in which epoch `epoch` visits examples 0..num_examples-1 (read-only, cached)."""
  perm = make_rng(seed, _STREAM_EPOCH, epoch).permutation(num_examples)
  perm.flags.writeable = False
  return perm


def global_indices(start: int, stop: int, *, seed: int, num_examples: int) -> np.ndarray:
  """Example indices at positions [start, stop) of the concatenated epoch permutations."""
  pos = np.arange(start, stop, dtype=np.int64)
  epochs = pos // num_examples
  out = np.empty_like(pos)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    out[sel] = epoch_permutation(seed, int(epoch), num_examples)[pos[sel] % num_examples]
  return out


class Dataset(abc.ABC):
  """A source of training batches and reference samples.

  Attributes:
    name: registry name (or a descriptive one for user data).
    example_shape: shape of one example, e.g. (2,) or (H, W, C) for NHWC images.
    num_classes: number of labels, 0 when unlabelled.
    num_examples: size of a finite dataset, None for infinite (analytic) sources.
    mixture: the exact GaussianMixture when the data is one, else None.
  """

  name: str
  example_shape: tuple[int, ...]
  num_classes: int = 0
  num_examples: Optional[int] = None
  mixture: Optional[GaussianMixture] = None

  @abc.abstractmethod
  def get_batch(self, step: int, batch_size: int, *, seed: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
    """This process's rows of global batch `step`: 'x' float32 and, if labelled, 'label' int32."""

  @abc.abstractmethod
  def sample(self, num: int, *, seed: int) -> np.ndarray:
    """`num` reference examples 'x' for evaluation, deterministic in `seed`."""

  def batch_fn(self, batch_size: int, *,
               seed: int) -> Callable[[int, int, int], dict[str, np.ndarray]]:
    """`get_batch` as `f(step, process_index, process_count)`, the trainer's batch callback."""
    def get(step: int, process_index: int, process_count: int) -> dict[str, np.ndarray]:
      return self.get_batch(step, batch_size, seed=seed, process_index=process_index,
                            process_count=process_count)
    return get

  def __repr__(self) -> str:
    return (f'{type(self).__name__}(name={self.name!r}, example_shape={self.example_shape}, '
            f'num_classes={self.num_classes}, num_examples={self.num_examples})')


class FiniteDataset(Dataset):
  """N examples read by index; training visits a fresh permutation of them every epoch.

  Global batch `step` holds positions [step*B, (step+1)*B) of the concatenation of
  permutation(seed, epoch 0), permutation(seed, epoch 1), ..., so batches wrap across epochs
  and each process reads only its own rows.
  """

  num_examples: int

  @abc.abstractmethod
  def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Examples at `indices` (any order): 'x' float32 and, if labelled, 'label' int32."""

  def get_batch(self, step: int, batch_size: int, *, seed: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
    rows = process_rows(batch_size, process_index=process_index, process_count=process_count)
    start = _check_nonnegative_int(step, 'step') * batch_size
    _check_nonnegative_int(seed, 'seed')
    idx = global_indices(start + rows.start, start + rows.stop, seed=seed,
                         num_examples=self.num_examples)
    return self._read(idx)

  def sample(self, num: int, *, seed: int) -> np.ndarray:
    """A random subset of `num` distinct examples of this dataset (this split), fixed by `seed`.

    Pass num == num_examples for the whole split; build the held-out split of the dataset
    (e.g. split='test') to evaluate against held-out data.
    """
    num = _check_nonnegative_int(num, 'num')
    if num > self.num_examples:
      raise ValueError(f'cannot draw {num} distinct reference examples from {self.name!r}, '
                       f'which has {self.num_examples}')
    idx = make_rng(seed, _STREAM_EVAL).permutation(self.num_examples)[:num]
    return self._read(idx)['x']


class SyntheticDataset(Dataset):
  """An infinite source: global batch `step` is drawn from its own (seed, step) stream."""

  @abc.abstractmethod
  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    """`num` i.i.d. examples, float32 of shape [num, *example_shape], using only `rng`."""

  def _draw_batch(self, num: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A batch of `num` examples: 'x' (and 'label' int32 in labelled sources)."""
    return {'x': self._draw(num, rng)}

  def get_batch(self, step: int, batch_size: int, *, seed: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
    rows = process_rows(batch_size, process_index=process_index, process_count=process_count)
    rng = make_rng(seed, _STREAM_BATCH, _check_nonnegative_int(step, 'step'))
    return {k: v[rows] for k, v in self._draw_batch(batch_size, rng).items()}

  def sample(self, num: int, *, seed: int) -> np.ndarray:
    """`num` fresh samples from a stream disjoint from every training batch."""
    return self._draw(_check_nonnegative_int(num, 'num'), make_rng(seed, _STREAM_EVAL))
