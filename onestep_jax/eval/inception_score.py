"""Inception Score (Salimans et al. 2016, arXiv 1606.03498, Sec. 4), accumulated batch by batch.

IS = exp(E_x KL(p(y|x) || p(y))), with p(y) the mean of p(y|x) over the set. The standard report
is the mean and (population) standard deviation over 10 consecutive splits of the samples, split
s holding samples [s N // 10, (s + 1) N // 10). Per split the score needs only sums,
E_x KL = mean_x sum_y p log p - sum_y pbar log pbar, so batches and processes merge exactly.
Computed in float64 from the logits.
"""
from __future__ import annotations

import numpy as np
from scipy import special

NUM_SPLITS = 10  # The standard number of splits.


def split_bounds(num_samples: int, num_splits: int = NUM_SPLITS) -> np.ndarray:
  """[num_splits + 1] boundaries: split s holds indices [bounds[s], bounds[s + 1])."""
  if num_splits < 1 or num_samples < num_splits:
    raise ValueError(f'the Inception Score needs at least one sample per split; got '
                     f'{num_samples} samples for {num_splits} splits')
  return np.arange(num_splits + 1) * num_samples // num_splits


class InceptionScoreAccumulator:
  """Per-split sums of p(y|x) and of sum_y p log p over samples with known global indices."""

  def __init__(self, *, num_samples: int, num_classes: int, num_splits: int = NUM_SPLITS):
    self.num_samples = num_samples
    self.bounds = split_bounds(num_samples, num_splits)
    self.counts = np.zeros(num_splits)
    self.sum_probs = np.zeros((num_splits, num_classes))
    self.sum_plogp = np.zeros(num_splits)

  def update(self, indices, logits) -> 'InceptionScoreAccumulator':
    """Adds samples at global `indices` [B] (in [0, num_samples)) with `logits` [B, classes]."""
    indices = np.asarray(indices)
    logits = np.asarray(logits, np.float64)
    if logits.shape != (indices.shape[0], self.sum_probs.shape[1]):
      raise ValueError(f'logits must have shape [{indices.shape[0]}, {self.sum_probs.shape[1]}], '
                       f'got {logits.shape}')
    if indices.size and (indices.min() < 0 or indices.max() >= self.num_samples):
      raise ValueError(f'sample indices must lie in [0, {self.num_samples})')
    log_p = special.log_softmax(logits, axis=1)
    p = np.exp(log_p)
    split = np.searchsorted(self.bounds, indices, side='right') - 1
    np.add.at(self.counts, split, 1.0)
    np.add.at(self.sum_probs, split, p)
    np.add.at(self.sum_plogp, split, np.sum(p * log_p, axis=1))
    return self

  def merge(self, other: 'InceptionScoreAccumulator') -> 'InceptionScoreAccumulator':
    """Adds the sums of disjoint samples of the same set."""
    same = (np.array_equal(other.bounds, self.bounds)
            and other.sum_probs.shape == self.sum_probs.shape)
    if not same:
      raise ValueError('cannot merge Inception Score sums of differently split sets')
    self.counts += other.counts
    self.sum_probs += other.sum_probs
    self.sum_plogp += other.sum_plogp
    return self

  def state(self) -> dict[str, np.ndarray]:
    return {'counts': self.counts, 'sum_probs': self.sum_probs, 'sum_plogp': self.sum_plogp}

  def load_state(self, state) -> 'InceptionScoreAccumulator':
    """Replaces the sums by those of `state` (from `state()` of an identically built one)."""
    for name, value in self.state().items():
      new = np.asarray(state[name], np.float64)
      if new.shape != value.shape:
        raise ValueError(f'Inception Score state {name} has shape {new.shape}, expected '
                         f'{value.shape}')
      setattr(self, name, new.copy())
    return self

  def result(self) -> tuple[float, float]:
    """(mean, std) of the per-split scores; every sample must have been added."""
    expected = np.diff(self.bounds)
    if not np.array_equal(self.counts, expected):
      raise ValueError(f'the Inception Score needs all {self.num_samples} samples; the splits '
                       f'hold {self.counts.astype(int).tolist()} of {expected.tolist()}')
    p_mean = self.sum_probs / self.counts[:, None]
    kl = self.sum_plogp / self.counts - np.sum(special.xlogy(p_mean, p_mean), axis=1)
    scores = np.exp(kl)
    return float(scores.mean()), float(scores.std())


def inception_score(logits, *, num_splits: int = NUM_SPLITS) -> tuple[float, float]:
  """(mean, std) Inception Score of all `logits` [N, classes] at once, splits in row order."""
  logits = np.asarray(logits)
  acc = InceptionScoreAccumulator(num_samples=logits.shape[0], num_classes=logits.shape[1],
                                  num_splits=num_splits)
  return acc.update(np.arange(logits.shape[0]), logits).result()
