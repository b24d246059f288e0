"""The Markov-chain token source: exact likelihood, entropy and marginals by enumeration."""
import itertools

import numpy as np
from scipy import stats

from onestep_jax.data import get_dataset
from onestep_jax.data.markov import MarkovChainDataset
from onestep_jax.data.registry import get_held_out


def test_exact_likelihood_entropy_and_marginals_by_enumeration():
  ds = MarkovChainDataset(vocab_size=3, length=4, concentration=0.5, chain_seed=1)
  seqs = np.array(list(itertools.product(range(3), repeat=4)))
  log_p = ds.log_likelihood(seqs)
  p = np.exp(log_p)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
  np.testing.assert_allclose(ds.expected_nll(), -np.sum(p * log_p) / 4, rtol=1e-12)
  for i in range(4):
    np.testing.assert_allclose(ds.marginals()[i], np.bincount(seqs[:, i], weights=p), rtol=1e-12)
  # Samples follow the chain: sequence frequencies vs exact probabilities.
  n = 50_000
  draws = ds.sample(n, seed=0)
  assert draws.dtype == np.int32 and draws.shape == (n, 4)
  counts = np.bincount(draws @ (3**np.arange(3, -1, -1)), minlength=81)
  keep = p * n > 5
  assert stats.chisquare(counts[keep], p[keep] * n * counts[keep].sum() / (p[keep] * n).sum()
                         ).pvalue > 1e-3
  # The sample NLL per token of the source's own samples estimates its entropy rate.
  nll = -ds.log_likelihood(draws).mean() / 4
  assert abs(nll - ds.expected_nll()) < 0.01


def test_batches_registry_and_held_out():
  ds = get_dataset('markov', vocab_size=5, length=6)
  assert ds.example_shape == (6,) and ds.vocab_size == 5
  full = ds.get_batch(3, 8, seed=2)['x']
  assert full.dtype == np.int32 and full.shape == (8, 6) and 0 <= full.min() and full.max() < 5
  parts = [ds.get_batch(3, 8, seed=2, process_index=i, process_count=2)['x'] for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(parts), full)
  np.testing.assert_array_equal(ds.get_batch(3, 8, seed=2)['x'], full)
  assert not np.array_equal(ds.get_batch(4, 8, seed=2)['x'], full)
  held_out = get_held_out('markov', vocab_size=5, length=6)
  np.testing.assert_array_equal(held_out.transition, ds.transition)  # the same chain
