"""Token sequences of a known first-order Markov chain: a text-like source whose likelihood is
exact, so the quality of a language model's samples can be measured exactly."""
from __future__ import annotations

import numpy as np

from onestep_jax.data.base import SyntheticDataset, make_rng

_STREAM_CHAIN = 3  # the numpy stream (after base's batch / epoch / eval streams) of the chain


class MarkovChainDataset(SyntheticDataset):
  """Sequences x_1..x_L with x_1 ~ initial and x_{i+1} ~ transition[x_i], over `vocab_size`
  tokens; the chain is drawn once from `chain_seed` (Dirichlet rows with `concentration`: small
  values give peaked, strongly dependent transitions).

  Batches are {'x': int32 [B, L]}. `log_likelihood` is exact, and so are the expected
  per-token NLL of the source and its per-position marginals.
  """

  def __init__(self, *, vocab_size: int = 8, length: int = 32, concentration: float = 0.3,
               chain_seed: int = 0, name: str = 'markov'):
    if vocab_size < 2 or length < 1 or concentration <= 0:
      raise ValueError(f'need vocab_size >= 2, length >= 1 and concentration > 0; got '
                       f'{vocab_size}, {length}, {concentration}')
    rng = make_rng(chain_seed, _STREAM_CHAIN)
    self.vocab_size = int(vocab_size)
    self.length = int(length)
    self.initial = rng.dirichlet(np.full(vocab_size, concentration))
    self.transition = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)
    self.name = name
    self.example_shape = (self.length,)

  def _draw(self, num: int, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sampling, one uniform per token."""
    u = rng.random((num, self.length))
    x = np.empty((num, self.length), np.int32)
    x[:, 0] = np.minimum(np.searchsorted(np.cumsum(self.initial), u[:, 0], side='right'),
                         self.vocab_size - 1)
    cdf = np.cumsum(self.transition, axis=1)
    for i in range(1, self.length):
      rows = cdf[x[:, i - 1]]
      x[:, i] = np.minimum((rows <= u[:, i:i + 1]).sum(axis=1), self.vocab_size - 1)
    return x

  def log_likelihood(self, tokens: np.ndarray) -> np.ndarray:
    """Exact log p(x) [N] (float64) of token sequences [N, L]; -inf for impossible ones."""
    x = np.asarray(tokens)
    if x.ndim != 2 or x.shape[1] != self.length:
      raise ValueError(f'expected tokens of shape [N, {self.length}], got {x.shape}')
    if x.min() < 0 or x.max() >= self.vocab_size:
      raise ValueError(f'tokens must lie in [0, {self.vocab_size}), got [{x.min()}, {x.max()}]')
    with np.errstate(divide='ignore'):
      return (np.log(self.initial[x[:, 0]])
              + np.log(self.transition[x[:, :-1], x[:, 1:]]).sum(axis=1))

  def marginals(self) -> np.ndarray:
    """p(x_i = v) [L, V] at every position."""
    out = [self.initial]
    for _ in range(self.length - 1):
      out.append(out[-1] @ self.transition)
    return np.stack(out)

  def expected_nll(self) -> float:
    """E[-log p(x)] / L: the per-token entropy of the source, the floor of any model's sample
    NLL per token."""
    entropy = lambda p: -np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0.0), -1)
    conditional = entropy(self.transition)  # [V]
    total = entropy(self.initial) + sum(m @ conditional for m in self.marginals()[:-1])
    return float(total / self.length)
