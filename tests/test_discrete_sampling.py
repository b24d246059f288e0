"""Masked-diffusion sampling: precise categorical draws, the ancestral chain, and the cache."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from onestep_jax.convert import mdlm
from onestep_jax.discrete.sampling import (ancestral_sample, categorical, exponential_variates,
                                           step_log_probs, uniform_from_bits)
from onestep_jax.discrete.schedule import LogLinearSchedule
from test_discrete import exact_denoiser, random_joint

SCHEDULE = LogLinearSchedule()


def test_uniform_from_64_bits_keeps_relative_precision_near_zero():
  rng = np.random.default_rng(0)
  hi = np.concatenate([rng.integers(0, 2**32, 1000), rng.integers(0, 16, 1000), [0, 0, 1, 2**31]])
  lo = np.concatenate([rng.integers(0, 2**32, 2000), [0, 2**32 - 1, 0, 12345]])
  u = np.asarray(uniform_from_bits(jnp.asarray(hi, jnp.uint32), jnp.asarray(lo, jnp.uint32)),
                 np.float64)
  exact = np.array([(int(h) * 2**32 + int(l) + 0.5) / 2**64 for h, l in zip(hi, lo)])
  np.testing.assert_allclose(u, exact, rtol=2**-22)
  assert u.min() == pytest.approx(0.5 * 2.0**-64, rel=1e-6)  # a float64 uniform stops at 2^-53
  # E = -log(1 - U): the small exponentials that decide a Gumbel-max draw keep their precision
  # (float32 -log(U') with a uniform U' could not go below 6e-8).
  e = np.asarray(-jnp.log1p(-uniform_from_bits(jnp.asarray(hi, jnp.uint32),
                                                jnp.asarray(lo, jnp.uint32))), np.float64)
  small = exact < 0.5
  np.testing.assert_allclose(e[small], -np.log1p(-exact[small]), rtol=1e-6)
  assert e.min() < 1e-19
  variates = np.asarray(exponential_variates(jax.random.PRNGKey(0), (100_000,)), np.float64)
  assert stats.kstest(variates, 'expon').pvalue > 1e-3


def test_categorical_matches_the_probabilities():
  p = np.array([0.5, 0.3, 0.15, 0.04, 0.009, 0.001, 0.0])
  log_p = np.where(p > 0, np.log(np.maximum(p, 1e-30)), -1e6).astype(np.float32)
  n = 200_000
  draws = np.asarray(jax.jit(lambda k: categorical(k, jnp.broadcast_to(log_p, (n, 7))))(
      jax.random.PRNGKey(1)))
  counts = np.bincount(draws, minlength=7)
  assert counts[6] == 0
  assert stats.chisquare(counts[:6], n * p[:6]).pvalue > 1e-3


def _chain_distribution(log_probs_fn, num_steps, vocab, length):
  """Exact distribution of `ancestral_sample`'s output, by propagating the distribution over
  all (vocab + 1)^length states through the step kernels and the final argmax."""
  mask = vocab
  states = np.array(list(itertools.product(range(vocab + 1), repeat=length)), np.int32)
  index = {tuple(s): i for i, s in enumerate(states)}
  log_x0 = log_probs_fn(jnp.asarray(states), None)
  ts = np.linspace(1.0, 1e-5, num_steps + 1)
  dist = np.zeros(len(states))
  dist[index[(mask,) * length]] = 1.0
  for t, s in zip(ts[:-1], ts[1:]):
    lp = np.asarray(step_log_probs(log_x0, jnp.asarray(states), t, s, mask_index=mask,
                                   schedule=SCHEDULE), np.float64)
    kernel = np.exp(np.sum(lp[:, np.arange(length)[None], states], axis=-1))  # [from, to]
    dist = dist @ kernel
  final = np.argmax(np.asarray(log_x0), -1)
  out = np.zeros((vocab,) * length)
  for i, state in enumerate(states):
    out[tuple(final[i])] += dist[i]
  return out


def test_ancestral_sampler_follows_its_chain_and_converges_to_the_data():
  vocab, length = 2, 2
  joint = np.array([[0.5, 0.1], [0.05, 0.35]])  # strongly correlated tokens
  fn = exact_denoiser(joint)
  tv = lambda a, b: 0.5 * np.abs(a - b).sum()
  one_step = _chain_distribution(fn, 1, vocab, length)
  # One step unmasks both tokens at once from their marginals; many steps one at a time.
  marginals = np.outer(joint.sum(1), joint.sum(0))
  assert tv(one_step, marginals) < 1e-4 and tv(marginals, joint) > 0.05
  many = _chain_distribution(fn, 1024, vocab, length)
  assert tv(many, joint) < tv(marginals, joint) / 100
  # The sampler draws from its chain: 3 steps, exact distribution vs 40,000 samples.
  three = _chain_distribution(fn, 3, vocab, length)
  n = 40_000
  tokens, _ = jax.jit(lambda k: ancestral_sample(fn, k, num=n, length=length, num_steps=3,
                                                 mask_index=vocab, schedule=SCHEDULE))(
                                                     jax.random.PRNGKey(2))
  counts = np.bincount(np.asarray(tokens) @ np.array([vocab, 1]), minlength=vocab**length)
  assert stats.chisquare(counts, n * three.reshape(-1) / three.sum()).pvalue > 1e-3


def _cached_and_uncached(fn, *, num, length, num_steps, mask_index, key):
  run = jax.jit(lambda k, cache: ancestral_sample(
      fn, k, num=num, length=length, num_steps=num_steps, mask_index=mask_index,
      schedule=SCHEDULE, cache=cache))  # `cache` traced: one compilation for both
  (plain, nfe_plain), (cached, nfe_cached) = run(key, jnp.array(False)), run(key, jnp.array(True))
  np.testing.assert_array_equal(cached, plain)
  assert int(nfe_plain) == num_steps + 1
  assert int(nfe_cached) <= min(num_steps, num * length) + 1
  return np.asarray(plain), int(nfe_cached)


def test_cached_sampler_returns_the_uncached_tokens():
  fn = exact_denoiser(random_joint(4, 3, 4))
  tokens, nfe = _cached_and_uncached(fn, num=2, length=4, num_steps=64, mask_index=3,
                                     key=jax.random.PRNGKey(5))
  assert nfe < 65 and np.all(tokens < 3)


def test_cached_sampler_on_the_converted_tiny_model(fixtures_dir):
  model = mdlm.load(fixtures_dir / 'mdlm_dit_tiny.npz')
  fn = lambda z, sigma: model.subs_log_probs(z, None, params=model.params)  # time-independent
  tokens, nfe = _cached_and_uncached(fn, num=2, length=8, num_steps=32,
                                     mask_index=model.mask_index, key=jax.random.PRNGKey(6))
  assert nfe < 33 and np.all(tokens != model.mask_index)
