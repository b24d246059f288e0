"""SDTT: its targets are the teacher's two-step marginal (checked by enumerating every teacher
trajectory), the divergences vanish exactly at equality, gradients reach only the student."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.discrete.process import subs_log_probs
from onestep_jax.discrete.schedule import LogLinearSchedule
from onestep_jax.losses.sdtt import DIVERGENCES, assign_targets, sdtt_loss, sdtt_targets

SCHEDULE = LogLinearSchedule()
VOCAB, LENGTH = 2, 3
MASK = VOCAB
T, DT = 0.7, 0.25


def _alpha(t):
  return 1 - (1 - SCHEDULE.eps) * t


def _step_probs(x0_probs, z, t, s):
  """Reference ancestral kernel (MDLM Eq. 7), numpy: P(z_s^l = v | z_t) [L, V + 1]."""
  out = np.eye(VOCAB + 1)[z]
  masked = z == MASK
  out[masked] = x0_probs[masked] * (_alpha(s) - _alpha(t)) / (1 - _alpha(t))
  out[masked, MASK] = (1 - _alpha(s)) / (1 - _alpha(t))
  return out


def _enumerate_trajectories(teacher, z_t):
  """Every two-step teacher trajectory (z_1, z_2) from z_t with its probability, and the
  teacher's predictions x_theta(z_t), x_theta(z_1) along it."""
  states = np.array(list(itertools.product(range(VOCAB + 1), repeat=LENGTH)), np.int32)
  x1 = np.asarray(teacher(jnp.asarray(z_t[None]), None))[0]
  p1 = _step_probs(np.exp(x1), z_t, T, T - DT)
  x2_all = np.asarray(teacher(jnp.asarray(states), None))
  rows = []
  for z1 in states:
    w1 = np.prod(p1[np.arange(LENGTH), z1])
    if w1 == 0:
      continue
    x2 = x2_all[np.flatnonzero((states == z1).all(1))[0]]
    p2 = _step_probs(np.exp(x2), z1, T - DT, T - 2 * DT)
    for z2 in states:
      w = w1 * np.prod(p2[np.arange(LENGTH), z2])
      if w > 0:
        rows.append((w, z1, z2, x2))
  w, z1, z2, x2 = (np.array(c) for c in zip(*rows))
  return w, z1, z2, np.broadcast_to(x1, x2.shape), x2


@pytest.mark.parametrize('z_t', [[MASK, MASK, MASK], [MASK, 1, MASK]])
def test_targets_are_the_teachers_two_step_marginal(z_t):
  z_t = np.array(z_t, np.int32)
  # A context-dependent teacher whose predictions change as tokens get unmasked (the exact
  # posterior of a distribution would make them a martingale, on which every estimator agrees).
  table = 3.0 * jax.random.normal(jax.random.PRNGKey(8), (LENGTH + 1, LENGTH, VOCAB + 1))
  teacher = lambda z, sigma: subs_log_probs(table[jnp.sum(z == MASK, axis=1)], z,
                                            mask_index=MASK)
  w, z1, z2, x1, x2 = _enumerate_trajectories(teacher, z_t)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  targets = np.exp(np.asarray(assign_targets(
      jnp.broadcast_to(z_t, z1.shape), [jnp.asarray(z1), jnp.asarray(z2)],
      [jnp.asarray(x1), jnp.asarray(x2)]), np.float64))
  student_unmask = (_alpha(T - 2 * DT) - _alpha(T)) / (1 - _alpha(T))
  for pos in np.flatnonzero(z_t == MASK):
    unmasked = z2[:, pos] != MASK
    p_unmasked = w[unmasked].sum()
    # The teacher's two steps unmask the token as often as the student's one step does ...
    np.testing.assert_allclose(p_unmasked, student_unmask, rtol=1e-5)
    # ... and the mean target of the tokens it unmasked is its two-step marginal given unmasked.
    marginal = np.bincount(z2[unmasked, pos], weights=w[unmasked], minlength=VOCAB)
    mean_target = np.sum(w[unmasked, None] * targets[unmasked, pos, :VOCAB], 0)
    np.testing.assert_allclose(mean_target / p_unmasked, marginal / p_unmasked, atol=1e-6)
    # Not vacuous: the teacher's one-step prediction x_theta(z_t) is a different distribution.
    first = np.exp(x1[0, pos, :VOCAB])
    assert np.abs(first - marginal / p_unmasked).max() > 1e-2
    # Taking the last prediction everywhere has the same mean (a token unmasked at step 1 then
    # carries the one-hot of its draw from x_theta(z_t)); SDTT's rule keeps x_theta(z_t) itself.
    last = np.sum(w[unmasked, None] * np.exp(x2[unmasked, pos, :VOCAB]), 0) / p_unmasked
    np.testing.assert_allclose(last, marginal / p_unmasked, atol=1e-6)

  # The sampled targets of `sdtt_targets` have the same conditional mean (Monte Carlo).
  n = 20_000
  batch = jnp.broadcast_to(jnp.asarray(z_t), (n, LENGTH))
  sampled, z_end = jax.jit(lambda k: sdtt_targets(
      teacher_log_probs_fn=teacher, z_t=batch, t=jnp.full((n,), T), dt=DT, key=k,
      mask_index=MASK, schedule=SCHEDULE))(jax.random.PRNGKey(0))
  sampled, z_end = np.exp(np.asarray(sampled, np.float64)), np.asarray(z_end)
  for pos in np.flatnonzero(z_t == MASK):
    unmasked = z_end[:, pos] != MASK
    exact = np.bincount(z2[z2[:, pos] != MASK, pos], weights=w[z2[:, pos] != MASK],
                        minlength=VOCAB) / student_unmask
    np.testing.assert_allclose(unmasked.mean(), student_unmask, atol=0.015)
    np.testing.assert_allclose(sampled[unmasked, pos, :VOCAB].mean(0), exact, atol=0.02)


def _subs(key, shape, mask):
  return subs_log_probs(2.0 * jax.random.normal(key, shape), jnp.full(shape[:-1], mask),
                        mask_index=mask)


class DivergenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_each_divergence_is_zero_exactly_at_equality(self):
    p = _subs(jax.random.PRNGKey(1), (4, 5, 6), 5)[..., :5]
    q = _subs(jax.random.PRNGKey(2), (4, 5, 6), 5)[..., :5]
    pn, qn = np.exp(np.asarray(p, np.float64)), np.exp(np.asarray(q, np.float64))
    expected = {
        'kl_reverse': np.sum(pn * np.log(pn / qn), -1),
        'kl_forward': np.sum(qn * np.log(qn / pn), -1),
        'mse': np.mean((np.log(pn) - np.log(qn))**2, -1),
        'tv': 0.5 * np.sum(np.abs(pn - qn), -1),
    }
    assert set(expected) == set(DIVERGENCES)
    for name, d in DIVERGENCES.items():
      same, different = self.variant(lambda a, b, d=d: (d.fn(a, a), d.fn(a, b)))(p, q)
      assert np.all(np.abs(np.asarray(same)) < 1e-6), name
      np.testing.assert_allclose(different, expected[name], rtol=2e-4, err_msg=name)
      assert np.all(np.asarray(different) > 1e-3), name

  @chex.variants(with_jit=True, without_jit=True)
  def test_loss_vanishes_for_a_student_equal_to_its_target_and_ignores_unmasked_tokens(self):
    vocab, mask = 4, 4
    table = jax.random.normal(jax.random.PRNGKey(3), (5, vocab + 1))

    def context_free(scale):  # the same prediction whatever z: every step predicts alike
      return lambda z, sigma: subs_log_probs(jnp.broadcast_to(scale * table[0], z.shape + (5,)),
                                             z, mask_index=mask)

    z_t = jnp.array([[mask, 1, mask, 3, mask, mask], [0, mask, mask, mask, 2, mask]])
    t = jnp.array([0.9, 0.4])

    def losses():
      out = {}
      for name in DIVERGENCES:
        loss = lambda student, name=name: sdtt_loss(
            student_log_probs_fn=student, teacher_log_probs_fn=context_free(1.0), z_t=z_t, t=t,
            dt=0.1, key=jax.random.PRNGKey(4), mask_index=mask, schedule=SCHEDULE,
            divergence=name)
        out[name] = (loss(context_free(1.0)), loss(context_free(1.7)))
      return out

    for name, (equal, other) in self.variant(losses)().items():
      chex.assert_shape(equal, (2,))
      assert np.all(np.abs(np.asarray(equal)) < 1e-6), name
      per_position = DIVERGENCES[name].fn(context_free(1.7)(z_t, None)[0, 0, :vocab],
                                          context_free(1.0)(z_t, None)[0, 0, :vocab])
      np.testing.assert_allclose(other, np.array([4, 4]) * per_position, rtol=1e-5,
                                 err_msg=name)  # 4 masked positions per row, none unmasked

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_reaches_the_student_only(self):
    vocab, mask = 3, 3

    def network(w):
      return lambda z, sigma: subs_log_probs(w[z] + jnp.mean(w[z], axis=1, keepdims=True), z,
                                             mask_index=mask)

    z_t = jnp.array([[mask, 0, mask, mask], [mask, mask, 2, mask]])
    w_student = jax.random.normal(jax.random.PRNGKey(5), (vocab + 1, vocab + 1))
    w_teacher = jax.random.normal(jax.random.PRNGKey(6), (vocab + 1, vocab + 1))

    def total(ws, wt):
      return jnp.sum(sdtt_loss(student_log_probs_fn=network(ws), teacher_log_probs_fn=network(wt),
                               z_t=z_t, t=jnp.array([0.8, 0.5]), dt=0.2,
                               key=jax.random.PRNGKey(7), mask_index=mask, schedule=SCHEDULE))

    g_student, g_teacher = self.variant(jax.grad(total, argnums=(0, 1)))(w_student, w_teacher)
    assert float(jnp.abs(g_student).max()) > 1e-3
    np.testing.assert_array_equal(g_teacher, np.zeros_like(g_teacher))
