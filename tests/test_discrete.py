"""Masked diffusion maths: the forward process, SUBS, and the continuous-time NELBO as the limit
of its discrete-time sum of KL terms."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.discrete.losses import nelbo_loss
from onestep_jax.discrete.process import NEG_INF, mask_tokens, subs_log_probs
from onestep_jax.discrete.sampling import step_log_probs
from onestep_jax.discrete.schedule import LogLinearSchedule, sample_time

SCHEDULE = LogLinearSchedule()


def exact_denoiser(joint: np.ndarray):
  """SUBS log-posterior log p(x0_l = v | unmasked tokens of z) of a joint distribution
  `joint` of shape [V] * L over sequences; the mask id is V (so outputs have V + 1 entries).
  It ignores sigma: the exact posterior of the masking process does not depend on t."""
  vocab, length = joint.shape[0], joint.ndim
  seqs = np.array(list(itertools.product(range(vocab), repeat=length)), np.int32)
  one_hot = np.eye(vocab + 1, dtype=np.float32)[seqs]  # [N, L, V + 1]
  p = joint.reshape(-1).astype(np.float32)

  def log_probs_fn(z, sigma):
    del sigma
    compatible = jnp.all((z[:, None] == vocab) | (z[:, None] == seqs[None]), axis=-1)
    w = compatible * p[None]
    probs = jnp.einsum('bn,nlv->blv', w / jnp.sum(w, -1, keepdims=True), one_hot)
    return jnp.where(probs > 0, jnp.log(jnp.maximum(probs, 1e-30)), NEG_INF)

  return log_probs_fn


def random_joint(seed: int, vocab: int, length: int) -> np.ndarray:
  p = np.random.default_rng(seed).dirichlet(np.full(vocab**length, 0.7))
  return p.reshape((vocab,) * length)


class SubsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_no_mass_on_mask_and_unmasked_tokens_copied(self):
    mask = 5
    logits = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (4, 7, 6))
    logits = logits.at[..., mask].set(1e3)  # the network favours the mask: SUBS must not
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 7), 0, 6)
    log_probs = self.variant(lambda l, z: subs_log_probs(l, z, mask_index=mask))(logits, tokens)
    probs = np.exp(np.asarray(log_probs, np.float64))
    assert np.all(np.asarray(log_probs)[..., mask] <= NEG_INF / 2) and np.all(probs[..., mask] == 0)
    masked = np.asarray(tokens) == mask
    assert masked.any() and (~masked).any()
    # Masked positions: the softmax of the other logits, normalised over the real tokens.
    expected = jax.nn.softmax(np.asarray(logits)[..., :mask], axis=-1)
    np.testing.assert_allclose(probs[masked][:, :mask], np.asarray(expected)[masked], rtol=1e-5)
    # Unmasked positions: exactly the one-hot of their own token.
    np.testing.assert_array_equal(probs[~masked], np.eye(6)[np.asarray(tokens)[~masked]])


def test_masking_rate_follows_the_log_linear_schedule():
  x0 = jnp.tile(jnp.arange(4, dtype=jnp.int32), (5, 5000))
  t = jnp.array([0.0, 0.1, 0.5, 0.9, 1.0])
  z = np.asarray(jax.jit(lambda k: mask_tokens(k, x0, t, mask_index=4, schedule=SCHEDULE))(
      jax.random.PRNGKey(2)))
  rate = (z == 4).mean(axis=1)
  np.testing.assert_allclose(rate, (1 - SCHEDULE.eps) * np.asarray(t), atol=0.01)
  np.testing.assert_array_equal(z[z != 4], np.asarray(x0)[z != 4])
  np.testing.assert_allclose(SCHEDULE.alpha(t), np.exp(-SCHEDULE.sigma(t)), rtol=1e-6)
  times = sample_time(jax.random.PRNGKey(3), 8, t_min=1e-3)
  # Antithetic draws: one per stratum [i/8, (i+1)/8) of the unit interval (before the shift).
  np.testing.assert_array_equal(np.sort(np.floor((times - 1e-3) / (1 - 1e-3) * 8)), np.arange(8))


def masking_patterns(x0: np.ndarray, mask: int):
  """Every z_t of x0 (1 = masked) and its probability as a function of t."""
  patterns = np.array(list(itertools.product([0, 1], repeat=len(x0))), bool)
  z = np.where(patterns, mask, x0[None]).astype(np.int32)
  n_masked = patterns.sum(1)

  def probs(t):
    m = (1 - SCHEDULE.eps) * np.asarray(t, np.float64)[:, None]
    return m**n_masked * (1 - m)**(len(x0) - n_masked)  # [T, patterns]

  return patterns, z, probs


def expected_nelbo(loss_fn, x0: np.ndarray, mask: int) -> float:
  """E_{t ~ U[0, 1], z_t} of the loss, by enumerating z_t and integrating over t by
  Gauss-Legendre: exact when the model ignores sigma (the integrand is then a polynomial in t of
  degree < L, the 1/t weight cancelling the factor t of every pattern with a masked token)."""
  _, z, probs = masking_patterns(x0, mask)
  nodes, weights = np.polynomial.legendre.leggauss(8)
  t_nodes, weights = (nodes + 1) / 2, weights / 2
  tt = np.repeat(t_nodes, len(z)).astype(np.float32)
  losses = np.asarray(loss_fn(np.tile(x0, (len(tt), 1)), np.tile(z, (len(t_nodes), 1)), tt))
  return float(np.sum(weights[:, None] * probs(t_nodes) * losses.reshape(len(t_nodes), len(z))))


class NelboTest(chex.TestCase):

  def _loss(self, model, mask):
    return self.variant(lambda xs, zs, ts: nelbo_loss(
        log_probs_fn=model, x0=xs, z_t=zs, t=ts, mask_index=mask, schedule=SCHEDULE))

  @chex.variants(with_jit=True)
  def test_nelbo_is_the_limit_of_the_discrete_time_kl_sum(self):
    """MDLM Eq. 10: sum_i E KL(q(z_s | z_t, x0) || p_theta(z_s | z_t)) over T steps tends to the
    integral of the continuous-time loss as T grows, with an O(1/T) Riemann error."""
    vocab, length = 3, 3
    mask = vocab
    denoiser = exact_denoiser(random_joint(0, vocab, length))
    # A tempered, imperfect model (still SUBS: normalised, no mass on the mask).
    model = lambda z, s: jax.nn.log_softmax(jnp.where(jnp.arange(vocab + 1) == mask, NEG_INF,
                                                      0.8 * denoiser(z, s)), -1)
    x0 = np.array([2, 0, 1], np.int32)
    continuous = expected_nelbo(self._loss(model, mask), x0, mask)
    patterns, z, probs = masking_patterns(x0, mask)
    log_x0 = model(jnp.asarray(z), None)

    steps = (16, 128, 1024)
    t = np.concatenate([np.arange(1, n + 1) / n for n in steps])
    s = t - np.concatenate([np.full(n, 1 / n) for n in steps])
    log_p = np.asarray(jax.jit(jax.vmap(lambda t, s: step_log_probs(
        log_x0, jnp.asarray(z), t, s, mask_index=mask, schedule=SCHEDULE)))(t, s), np.float64)
    a_t, a_s = [(1 - (1 - SCHEDULE.eps) * u)[:, None, None] for u in (t, s)]
    q = np.zeros_like(log_p)  # the true posterior q(z_s | z_t, x0) at masked positions
    q[..., mask] = (1 - a_s) / (1 - a_t)
    q += np.eye(vocab + 1)[x0][None, None] * ((a_s - a_t) / (1 - a_t))[..., None]
    kl = np.sum(np.where(q > 0, q * (np.log(np.maximum(q, 1e-300)) - log_p), 0.0), -1)
    per_step = np.sum(probs(t) * np.sum(kl * patterns, -1), -1)
    sums = [chunk.sum() for chunk in np.split(per_step, np.cumsum(steps)[:-1])]
    errors = [abs(total - continuous) for total in sums]
    assert continuous > 0.5  # nats: the model is far from perfect, the test is not vacuous
    assert errors[2] < 2e-3 * continuous
    for coarse, fine in zip(errors, errors[1:]):
      assert 5 < coarse / fine < 11  # first order in 1 / T

  @chex.variants(with_jit=True, without_jit=True)
  def test_exact_posterior_nelbo_and_its_monte_carlo_estimate(self):
    """With the exact posterior the NELBO is -log p(x0) minus the information of the tokens that
    stay unmasked at t = 1 (probability eps each), whose prior term the loss leaves out:
    E_U[-log p(x0_U)]. The training estimate (antithetic t, masking) is unbiased for it."""
    vocab, length, mask = 3, 3, 3
    joint = random_joint(1, vocab, length)
    model = exact_denoiser(joint)
    x0 = np.array([1, 1, 0], np.int32)
    value = expected_nelbo(self._loss(model, mask), x0, mask)
    prior = 0.0
    for kept in itertools.product([0, 1], repeat=length):  # 1 = unmasked at t = 1
      marginal = joint.sum(axis=tuple(i for i in range(length) if not kept[i]))
      log_p = np.log(marginal[tuple(x0[i] for i in range(length) if kept[i])])
      prior += np.prod([SCHEDULE.eps if k else 1 - SCHEDULE.eps for k in kept]) * -log_p
    np.testing.assert_allclose(value, -np.log(joint[tuple(x0)]) - prior, rtol=1e-5)
    assert prior > 1e-3  # the correction is resolved by the tolerance

    batch = jnp.tile(jnp.asarray(x0)[None], (20_000, 1))

    def estimate(key):
      k_t, k_z = jax.random.split(key)
      t = sample_time(k_t, batch.shape[0], t_min=1e-5)
      z = mask_tokens(k_z, batch, t, mask_index=mask, schedule=SCHEDULE)
      return nelbo_loss(log_probs_fn=model, x0=batch, z_t=z, t=t, mask_index=mask,
                        schedule=SCHEDULE)

    losses = np.asarray(self.variant(estimate)(jax.random.PRNGKey(4)), np.float64)
    assert abs(losses.mean() - value) < 4 * losses.std() / np.sqrt(len(losses))
