"""The autoregressive baseline: causal transformer with a KV cache, exact likelihood, sampling,
generative perplexity, and the 'ar' method trained on the Markov source."""
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from onestep_jax.data import get_dataset
from onestep_jax.discrete import autoregressive as ar
from onestep_jax.discrete.losses import token_log_likelihood
from onestep_jax.experiment.discrete_evaluation import load_ar_evaluator
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import run
from onestep_jax.methods.autoregressive import load_evaluator
from onestep_jax.nets.causal_transformer import CausalTransformer, init_cache

ROOT = pathlib.Path(__file__).resolve().parents[1]
VOCAB = 3  # data tokens; the start token is id 3
BOS = VOCAB
MODULE = CausalTransformer(vocab_size=VOCAB + 1, hidden_size=16, n_heads=2, n_blocks=2)


def random_params(module, seed, scale=0.5):
  """Every leaf random (the zero-initialised read-out included)."""
  shapes = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 4), jnp.int32)),
                          jax.random.PRNGKey(0))['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (scale * rng.standard_normal(x.shape)).astype(np.float32),
                      shapes)


PARAMS = random_params(MODULE, 0)
logits_fn = jax.jit(lambda x: MODULE.apply({'params': PARAMS}, x))
step_fn = lambda x, cache, i: MODULE.apply({'params': PARAMS}, x, cache=cache, index=i)


def test_cached_decoding_gives_the_full_forward_logits():
  tokens = jnp.array([[3, 0, 2, 1, 1, 0, 2], [3, 2, 2, 0, 1, 2, 1]])
  full = np.asarray(logits_fn(tokens))

  @jax.jit
  def decode(tokens):
    # A 3-token prompt in one call, then one token per call, into a cache of 9 slots.
    logits, cache = step_fn(tokens[:, :3], init_cache(MODULE, 2, 9), 0)
    out = [logits]
    for i in range(3, tokens.shape[1]):
      logits, cache = step_fn(tokens[:, i:i + 1], cache, jnp.int32(i))
      out.append(logits)
    return jnp.concatenate(out, axis=1)

  np.testing.assert_allclose(np.asarray(decode(tokens)), full, rtol=1e-5, atol=1e-5)
  assert np.ptp(full[:, -1]) > 0.1  # the logits are not trivial


def test_causality_of_the_network_and_of_next_token_probabilities():
  x = jnp.array([[0, 2, 1, 1, 0, 2]])
  inputs = ar.shift_right(x, bos_index=BOS)
  per_position = lambda x: token_log_likelihood(
      ar.next_token_log_probs(logits_fn(ar.shift_right(x, bos_index=BOS)), bos_index=BOS), x)
  for i in range(x.shape[1]):
    # Network: logits at positions < i ignore the input at i; the one at i sees it.
    changed = inputs.at[0, i].set((inputs[0, i] + 1) % VOCAB)
    a, b = np.asarray(logits_fn(inputs)), np.asarray(logits_fn(changed))
    np.testing.assert_allclose(b[0, :i], a[0, :i], rtol=1e-6, atol=1e-6)
    assert np.abs(b[0, i] - a[0, i]).max() > 1e-3
    # Next-token terms: log p(x_j | x_<j) for j < i ignore x_i; the term of x_i itself and later
    # ones depend on it.
    lp, lp_changed = per_position(x), per_position(x.at[0, i].set((x[0, i] + 1) % VOCAB))
    np.testing.assert_allclose(lp_changed[0, :i], lp[0, :i], rtol=1e-6, atol=1e-6)
    assert np.abs(lp_changed[0, i:] - lp[0, i:]).min() > 1e-4


def test_sequence_log_likelihood_is_the_sum_of_per_step_log_softmax_and_normalised():
  x = np.array([[1, 0, 2, 2, 1], [2, 2, 2, 0, 0]], np.int32)
  total = np.asarray(ar.sequence_log_likelihood(logits_fn, jnp.asarray(x), bos_index=BOS))
  # One forward per prefix [BOS, x_<l] (padded with junk after it: the net is causal), and a
  # float64 log-softmax over the data tokens of its output at position l.
  prefixes = np.full((len(x), x.shape[1], x.shape[1]), 2, np.int32)
  for l in range(x.shape[1]):
    prefixes[:, l, 0], prefixes[:, l, 1:l + 1] = BOS, x[:, :l]
  logits = np.asarray(logits_fn(jnp.asarray(prefixes.reshape(-1, x.shape[1]))), np.float64)
  logits = logits.reshape(len(x), x.shape[1], x.shape[1], -1)
  expected = np.zeros(len(x))
  for b, l in itertools.product(range(len(x)), range(x.shape[1])):
    step = logits[b, l, l, :VOCAB]
    expected[b] += step[x[b, l]] - np.log(np.sum(np.exp(step)))
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  loss = ar.next_token_loss(logits_fn=logits_fn, tokens=jnp.asarray(x), bos_index=BOS)
  np.testing.assert_allclose(loss, -total / x.shape[1], rtol=1e-6)
  # Normalised: the probabilities of all V^L sequences sum to one.
  seqs = jnp.asarray(list(itertools.product(range(VOCAB), repeat=4)), jnp.int32)
  p = np.exp(np.asarray(ar.sequence_log_likelihood(logits_fn, seqs, bos_index=BOS), np.float64))
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)


def test_cached_sampling_equals_uncached_sampling():
  kw = dict(num=5, length=7, bos_index=BOS)
  cached = jax.jit(lambda k: ar.sample(step_fn, init_cache(MODULE, 5, 7), k, **kw))
  uncached = jax.jit(lambda k: ar.sample_uncached(logits_fn, k, **kw))
  for seed in range(3):
    a, b = cached(jax.random.PRNGKey(seed)), uncached(jax.random.PRNGKey(seed))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 7) and a.dtype == jnp.int32 and np.all((0 <= a) & (a < VOCAB))
  assert not np.array_equal(a, cached(jax.random.PRNGKey(0)))


def test_samples_follow_the_model_and_gen_ppl_of_own_samples():
  """The sampler draws from the distribution its log-likelihood defines (checked against all
  V^L sequences), so the gen PPL of its own samples is exp of the model's entropy rate."""
  length, n = 4, 6000
  seqs = np.array(list(itertools.product(range(VOCAB), repeat=length)), np.int32)
  evaluator = ar.Evaluator(apply_fn=lambda p, x: MODULE.apply({'params': p}, x), params=PARAMS,
                           bos_index=BOS, length=length, batch_size=1000)
  log_p = evaluator.log_likelihood(seqs)
  entropy = -np.sum(np.exp(log_p) * log_p)
  samples = np.asarray(jax.jit(lambda k: ar.sample(step_fn, init_cache(MODULE, n, length), k,
                                                   num=n, length=length, bos_index=BOS))(
                                                       jax.random.PRNGKey(7)))
  counts = np.bincount(samples @ VOCAB**np.arange(length - 1, -1, -1), minlength=len(seqs))
  expected = n * np.exp(log_p)
  keep = expected > 5
  assert stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum()
                         ).pvalue > 1e-3
  # gen PPL = exp(mean NLL per token), here over a sample count that is not a batch multiple.
  sample_ll = evaluator.log_likelihood(samples[:5555])
  np.testing.assert_allclose(sample_ll, log_p[(samples[:5555] @ VOCAB**np.arange(3, -1, -1))],
                             rtol=1e-6)
  ppl = ar.generative_perplexity(evaluator, samples)
  nll = -evaluator.log_likelihood(samples) / length
  np.testing.assert_allclose(np.log(ppl), nll.mean(), rtol=1e-9)
  assert abs(nll.mean() - entropy / length) < 4 * nll.std() / np.sqrt(n)
  with pytest.raises(ValueError, match='ids in'):
    evaluator.log_likelihood(np.full((2, 3), BOS))


def tiny_ar_config(**train):
  c = load_config_file(f'{ROOT}/configs/ar_markov.py')
  c.train.compilation_cache = False
  c.data.kwargs.update(vocab_size=4, length=8)
  c.net.kwargs.update(hidden_size=32, n_heads=2, n_blocks=1)
  c.method.update(lr=3e-3, lr_warmup_steps=20, ema_halflife_nimg=1000.0)
  c.train.update(batch_size=64, log_every=25, **train)
  c.eval.update(num_samples=400, batch_size=200)
  return c


def test_ar_run_learns_the_markov_chain_and_scores_samples(tmp_path):
  # The run's export is written before its evaluation, so it can be its own evaluator: the
  # gen_ppl path of every token model (mdlm, sdtt, ar) through the CLI's runner.
  config = tiny_ar_config(num_steps=150, save_every=150)
  config.eval.ar_evaluator = str(tmp_path)
  metrics = run(config, str(tmp_path), progress=False)
  exact = metrics['data/sample_nll_exact']
  # The zero-initialised read-out starts uniform over the 4 tokens (NLL log 4 per token, far
  # above the chain's entropy rate); training approaches the entropy rate.
  assert np.log(4) - exact > 0.4
  assert metrics['ar/nelbo'] - exact < 0.1 * (np.log(4) - exact)
  assert abs(metrics['ar/sample_nll@8'] - exact) < 0.2 * (np.log(4) - exact)
  assert {'ar/entropy@8', 'ar/tokens_per_s@8'} <= set(metrics)
  # gen PPL of held-out data is exp of the model's NLL on it; of its own samples, close to it
  # (the model is near the source); of uniformly random tokens, far above.
  assert abs(np.log(metrics['data/gen_ppl_floor']) - metrics['ar/nelbo']) < 0.05
  assert abs(np.log(metrics['ar/gen_ppl@8']) - metrics['ar/nelbo']) < 0.1
  evaluator = load_evaluator(str(tmp_path))
  noise = np.random.default_rng(0).integers(0, 4, (400, 8))
  assert np.log(ar.generative_perplexity(evaluator, noise)) > metrics['ar/nelbo'] + 0.5
  with pytest.raises(ValueError, match='token ids'):
    load_ar_evaluator(str(tmp_path), get_dataset('markov', vocab_size=5, length=8))


def test_a_missing_ar_evaluator_fails_before_the_teacher_trains(tmp_path):
  # sdtt_markov trains its teacher first: a wrong evaluator path must not cost that training.
  config = load_config_file(f'{ROOT}/configs/sdtt_markov.py')
  config.eval.ar_evaluator = str(tmp_path / 'no_such_run')
  with pytest.raises(FileNotFoundError, match='no_such_run'):
    run(config, str(tmp_path / 'workdir'), progress=False)
  assert not (tmp_path / 'workdir').exists()
