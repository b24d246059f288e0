"""The MDLM diffusion transformer: rotary convention, non-causal attention, optional time input."""
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.nets.dit import DiT, apply_rotary, rotary_inv_freq


def test_rotary_is_rotate_half_and_relative():
  head_dim = 8
  inv_freq = rotary_inv_freq(head_dim)
  np.testing.assert_allclose(inv_freq, 10_000.0**(-np.arange(0, 8, 2) / 8), rtol=1e-6)
  # Rotate-half: coordinate i pairs with i + head_dim/2 (not with i + 1 as in the interleaved
  # convention); at position p the pair turns by the angle p * inv_freq[i].
  rotate = jax.jit(apply_rotary)
  e0 = np.zeros((1, 3, 1, head_dim), np.float32)
  e0[..., 0] = 1.0
  out = np.asarray(rotate(e0, inv_freq))[0, :, 0]
  for p in range(3):
    expected = np.zeros(head_dim)
    expected[0], expected[4] = np.cos(p * inv_freq[0]), np.sin(p * inv_freq[0])
    np.testing.assert_allclose(out[p], expected, atol=1e-6)
  # Scores of rotated queries and keys depend on positions only through their difference.
  length = 7
  qk = np.broadcast_to(np.random.default_rng(0).normal(size=(2, 1, 1, head_dim)),
                       (2, length, 1, head_dim)).astype(np.float32)
  rq, rk = np.asarray(rotate(qk, inv_freq))[:, :, 0]
  scores = rq @ rk.T
  for offset in range(-length + 1, length):
    diagonal = np.diagonal(scores, offset)
    np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-5, atol=1e-5)
  assert np.ptp(np.diagonal(scores, 0)) < 1e-5 and abs(scores[0, 1] - scores[0, 0]) > 1e-3


def _random_dit_params(module, seed):
  """Parameters with every leaf random (the zero-initialised adaLN and read-out included)."""
  shapes = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 4), jnp.int32)),
                          jax.random.PRNGKey(0))['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (0.3 * rng.standard_normal(x.shape)).astype(np.float32), shapes)


def test_attention_is_bidirectional_and_time_input_optional():
  module = DiT(vocab_size=9, hidden_size=16, cond_dim=8, n_heads=2, n_blocks=2)
  params = _random_dit_params(module, 1)
  tokens = jnp.array([[1, 2, 3, 8, 4], [0, 8, 8, 5, 6]])
  apply = jax.jit(lambda t, s=None: module.apply({'params': params}, t, s))
  logits = apply(tokens)
  assert logits.shape == (2, 5, 9)
  # No sigma means sigma = 0 (MDLM's time-independent network); other sigmas differ.
  np.testing.assert_array_equal(logits, apply(tokens, jnp.zeros(2)))
  assert np.abs(apply(tokens, jnp.ones(2)) - logits).max() > 1e-3
  # Non-causal: the first position sees a change of the last token, and rows are independent.
  changed = apply(tokens.at[0, -1].set(7))
  assert np.abs(changed[0, 0] - logits[0, 0]).max() > 1e-4
  np.testing.assert_allclose(changed[1], logits[1], rtol=1e-6, atol=1e-6)
