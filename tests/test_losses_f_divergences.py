"""The f table and the generator losses of f-distill, Uni-Instruct and DiffRatio, against autodiff
of the divergences they claim to minimise on Gaussians, and their special cases.

Set-up as in tests/test_losses_sid_sim.py: a 1-D generator x_g = mu + s z, theta = (mu, s), whose
noisy marginal q_sigma = N(mu, s^2 + sigma^2) has an exact denoiser and log-density, and a
two-component mixture teacher p with exact ones, so the density ratio r = p_sigma / q_sigma is
exact too. Expectations over (z, n) use a 40 x 40 Gauss-Hermite product rule, expectations
under q_sigma an 80-node rule.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.losses.diff_instruct import diff_instruct_generator_loss
from onestep_jax.losses.diffratio import diffratio_generator_loss
from onestep_jax.losses.divergences import (DIVERGENCES, get_divergence, h_and_derivatives,
                                            has_concave_h)
from onestep_jax.losses.dmd import dmd_generator_loss
from onestep_jax.losses.f_distill import (density_ratio, divergence_weights,
                                          f_distill_generator_loss, ratio_within_range)
from onestep_jax.losses.sid import sid_generator_loss
from onestep_jax.losses.sim import sim_generator_loss
from onestep_jax.losses.uni_instruct import uni_instruct_generator_loss

SIGMA = 0.7
THETA0 = jnp.array([0.3, 0.6])  # (mu, s) of the generator
TEACHER = GaussianMixture.isotropic(means=[[-1.0], [1.5]], std=[0.5, 0.7], weights=[0.3, 0.7])
NO_NORMALISATION = dict(normalize_weights=False)


def _hermite(num):
  nodes, weights = np.polynomial.hermite_e.hermegauss(num)  # weight exp(-x^2 / 2)
  return nodes, weights / weights.sum()


def _quadrature(num=40, num_1d=80):
  """(z, n, w) of the product rule, and 1-D nodes and weights for expectations under q_sigma
  (whose integrands, with ratios p / q, need more nodes than the losses' for the same accuracy)."""
  nodes, weights = _hermite(num)
  z, n = np.meshgrid(nodes, nodes, indexing='ij')
  w = np.outer(weights, weights).ravel()
  xi, w1 = _hermite(num_1d)
  return (jnp.asarray(z.reshape(-1, 1), jnp.float32), jnp.asarray(n.reshape(-1, 1), jnp.float32),
          jnp.asarray(w, jnp.float32), jnp.asarray(xi, jnp.float32), jnp.asarray(w1, jnp.float32))


Z, N, W, XI, W1 = _quadrature()
SIGMAS = jnp.full((Z.shape[0],), SIGMA)


def _var(theta):
  return theta[1]**2 + SIGMA**2


def _log_q(x, theta):
  """log N(x; mu, s^2 + sigma^2) per example, x [B, 1]."""
  v = _var(theta)
  return -0.5 * (x[:, 0] - theta[0])**2 / v - 0.5 * jnp.log(2 * jnp.pi * v)


def _log_p(x):
  return TEACHER.log_prob(x, SIGMA)


def _fake(theta):
  """The exact denoiser of q_theta's noisy marginals, theta held fixed."""
  mu, s = jax.lax.stop_gradient(theta)
  return lambda x, sigma, _: mu + s**2 / (s**2 + sigma[:, None]**2) * (x - mu)


def _teacher(x, s, _):
  return TEACHER.denoise(x, s)


def _generator(theta):
  return theta[0] + theta[1] * Z


def _f_divergence(theta, name):
  """D_f(p_sigma || q_theta,sigma) = E_q[f(p / q)], by Gauss-Hermite under q."""
  x = (theta[0] + jnp.sqrt(_var(theta)) * XI)[:, None]
  return jnp.sum(W1 * get_divergence(name).f(jnp.exp(_log_p(x) - _log_q(x, theta))))


def _exact_ratio(theta):
  """r = p / q at the quadrature points x_t = mu + s z + sigma n, theta held fixed."""
  x_t = _generator(jax.lax.stop_gradient(theta)) + SIGMA * N
  return jnp.exp(_log_p(x_t) - _log_q(x_t, jax.lax.stop_gradient(theta)))


def _nonlinear_problem(seed, n, sigma):
  """Generator samples x_g [n, 2], a positive ratio [n], and the loss keywords of two nonlinear
  denoisers at noise levels `sigma` [n], for identities that hold example by example."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  kw = dict(sigma=sigma, noise=jax.random.normal(k2, (n, 2)),
            teacher_denoiser=lambda x, s, _: jnp.tanh(x) / (1.0 + s[:, None]),
            fake_denoiser=lambda x, s, _: 0.3 * x + 0.2 * jnp.sin(2.0 * x))
  return jax.random.normal(k1, (n, 2)), jnp.exp(jax.random.normal(k3, (n,))), kw


class FTableTest(chex.TestCase):

  def test_h_is_f_second_derivative_times_r_squared(self):
    with jax.enable_x64(True):  # float32 loses digits in the log forms at large r
      r = jnp.logspace(-2, 2, 25, dtype=jnp.float64)
      for name, row in DIVERGENCES.items():
        f2 = jax.vmap(jax.grad(jax.grad(row.f)))(r)
        np.testing.assert_allclose(row.h(r), f2 * r**2, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(row.f(jnp.ones((), jnp.float64)), 0.0, atol=1e-15,
                                   err_msg=name)
        assert row.uses_ratio == (name != 'reverse_kl')

  def test_h_derivatives_are_the_derivatives_of_h(self):
    r = jnp.array([0.2, 1.0, 3.0])
    h, d1, d2 = h_and_derivatives('jensen_shannon', r)  # h = r / (r + 1)
    np.testing.assert_allclose(h, r / (r + 1), rtol=1e-6)
    np.testing.assert_allclose(d1, 1 / (r + 1)**2, rtol=1e-5)
    np.testing.assert_allclose(d2, -2 / (r + 1)**3, rtol=1e-5)

  def test_unknown_divergence_lists_the_valid_ones(self):
    with pytest.raises(ValueError, match='jensen_shannon'):
      get_divergence('kl')


class DensityRatioTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_clipping_and_noise_level_bins(self):
    logits = jnp.log(jnp.array([0.01, 0.5, 2.0, 100.0, 1.0, 3.0]))
    sigma = jnp.array([0.01, 0.01, 0.01, 0.01, 50.0, 50.0])  # two bins: 4 small, 2 large
    clipped = self.variant(lambda l: density_ratio(logits=l, sigma=sigma, num_bins=0))(logits)
    np.testing.assert_allclose(clipped, [0.1, 0.5, 2.0, 20.0, 1.0, 3.0], rtol=1e-5)
    binned = self.variant(lambda l: density_ratio(logits=l, sigma=sigma, num_bins=10))(logits)
    np.testing.assert_allclose(binned[:4], clipped[:4] / np.mean(clipped[:4]), rtol=1e-5)
    np.testing.assert_allclose(binned[4:], clipped[4:] / np.mean(clipped[4:]), rtol=1e-5)
    raw = density_ratio(logits=logits, sigma=sigma, ratio_range=None, num_bins=0)
    np.testing.assert_allclose(raw, jnp.exp(logits), rtol=1e-5)
    for bad in ((2.0, 0.5), (0.0, 20.0), (-1.0, 2.0)):  # reversed, or log of a non-positive
      with pytest.raises(ValueError, match=r'ratio_range must be \(lo, hi\) with 0 < lo < hi'):
        density_ratio(logits=logits, sigma=sigma, ratio_range=bad)

  def test_weights_have_batch_mean_one_and_need_a_ratio(self):
    r = jnp.array([0.1, 1.0, 4.0, 9.0])
    h = divergence_weights(ratio=r, divergence='forward_kl', batch=4)
    np.testing.assert_allclose(h, r / jnp.mean(r), rtol=1e-6)
    np.testing.assert_allclose(divergence_weights(ratio=None, divergence='reverse_kl', batch=4),
                               1.0)
    with pytest.raises(ValueError, match='needs the density ratio'):
      divergence_weights(ratio=None, divergence='jensen_shannon', batch=4)


  @chex.variants(with_jit=True, without_jit=True)
  def test_weights_binned_by_noise_level_have_mean_one_in_each_bin(self):
    r = jnp.array([0.1, 1.0, 4.0, 9.0, 0.5, 2.0])
    sigma = jnp.array([0.01, 0.01, 0.01, 0.01, 50.0, 50.0])  # two bins: 4 small, 2 large
    h = self.variant(lambda r: divergence_weights(ratio=r, divergence='neyman_chi2', batch=6,
                                                  sigma=sigma, weight_bins=10))(r)
    want = 2 / r
    np.testing.assert_allclose(h[:4], want[:4] / np.mean(want[:4]), rtol=1e-5)
    np.testing.assert_allclose(h[4:], want[4:] / np.mean(want[4:]), rtol=1e-5)
    one_bin = divergence_weights(ratio=r, divergence='neyman_chi2', batch=6,
                                 sigma=jnp.full((6,), 1.0), weight_bins=10)
    np.testing.assert_allclose(one_bin, want / np.mean(want), rtol=1e-5)  # = the batch mean
    with pytest.raises(ValueError, match='needs the noise levels'):
      divergence_weights(ratio=r, divergence='neyman_chi2', batch=6, weight_bins=10)
    with pytest.raises(ValueError, match='weight_bins must be >= 0'):
      divergence_weights(ratio=r, divergence='neyman_chi2', batch=6, sigma=sigma, weight_bins=-1)


class FDistillTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_reverse_kl_is_diff_instruct(self):
    # h = 1: no ratio needed, and without DMD's normaliser the injected gradient is DI's.
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x_g = jax.random.normal(k1, (16, 1))
    noise = jax.random.normal(k2, (16, 1))
    kw = dict(sigma=jnp.linspace(0.1, 3.0, 16), noise=noise, teacher_denoiser=_teacher,
              fake_denoiser=_fake(THETA0))
    grads = lambda x: (
        jax.grad(lambda y: f_distill_generator_loss(
            x_g=y, ratio=None, divergence='reverse_kl', normalize=False, **kw).sum())(x),
        jax.grad(lambda y: diff_instruct_generator_loss(x_g=y, **kw).sum())(x))
    g_f, g_di = self.variant(grads)(x_g)
    assert float(jnp.min(jnp.abs(g_di))) > 1e-3
    np.testing.assert_allclose(g_f, g_di, rtol=1e-5, atol=1e-7)

  @chex.variants(with_jit=True)  # many traced gradients: op by op is slow
  def test_gradient_is_the_f_divergence_gradient(self):
    # E[grad loss] = sigma^2 grad_theta D_f(p_sigma || q_theta,sigma) with the exact ratio.
    def grads(theta):
      out = {}
      for name in DIVERGENCES:
        surrogate = lambda t: jnp.sum(W * f_distill_generator_loss(
            x_g=_generator(t), sigma=SIGMAS, noise=N, teacher_denoiser=_teacher,
            fake_denoiser=_fake(theta), ratio=_exact_ratio(theta), divergence=name,
            normalize=False, **NO_NORMALISATION))
        out[name] = (jax.grad(surrogate)(theta), jax.grad(_f_divergence)(theta, name))
      return out

    for name, (g_loss, g_div) in self.variant(grads)(THETA0).items():
      assert float(jnp.min(jnp.abs(g_div))) > 1e-3, name  # a non-degenerate point
      np.testing.assert_allclose(g_loss, SIGMA**2 * g_div, rtol=2e-3, atol=1e-6, err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  def test_normalised_loss_is_h_times_dmd(self):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    x_g = jax.random.normal(k1, (8, 3))
    noise = jax.random.normal(k2, (8, 3))
    ratio = jnp.exp(jax.random.normal(k3, (8,)))
    kw = dict(sigma=jnp.linspace(0.1, 3.0, 8), noise=noise,
              teacher_denoiser=lambda x, s, _: jnp.tanh(x), fake_denoiser=lambda x, s, _: 0.5 * x)
    grads = lambda x: (
        jax.grad(lambda y: f_distill_generator_loss(x_g=y, ratio=ratio,
                                                    divergence='jensen_shannon', **kw).sum())(x),
        jax.grad(lambda y: dmd_generator_loss(x_g=y, **kw).sum())(x))
    g_f, g_dmd = self.variant(grads)(x_g)
    h = ratio / (ratio + 1)
    np.testing.assert_allclose(g_f, (h / jnp.mean(h))[:, None] * g_dmd, rtol=1e-5, atol=1e-7)


class DiffRatioTest(chex.TestCase):

  @chex.variants(with_jit=True)  # many traced gradients: op by op is slow
  def test_gradient_is_the_f_divergence_gradient_with_the_exact_ratio(self):
    # The classifier's logit is the exact log p_sigma / q_sigma: no teacher, no fake score.
    def grads(theta):
      frozen = jax.lax.stop_gradient(theta)
      logit_fn = lambda x, s, _: _log_p(x) - _log_q(x, frozen)
      out = {}
      for name in DIVERGENCES:
        surrogate = lambda t: jnp.sum(W * diffratio_generator_loss(
            x_g=_generator(t), sigma=SIGMAS, noise=N, logit_fn=logit_fn, divergence=name,
            ratio_range=None, ratio_bins=0, **NO_NORMALISATION))
        out[name] = (jax.grad(surrogate)(theta), jax.grad(_f_divergence)(theta, name))
      return out

    for name, (g_loss, g_div) in self.variant(grads)(THETA0).items():
      np.testing.assert_allclose(g_loss, SIGMA**2 * g_div, rtol=2e-3, atol=1e-6, err_msg=name)

  @chex.variants(with_jit=True)  # many traced gradients: op by op is slow
  def test_exact_classifier_gives_f_distills_gradient_example_by_example(self):
    # 2-D mixtures p (teacher) and q (student): -sigma^2 grad log(p/q) = D_q - D_p exactly, so
    # with the exact log ratio DiffRatio injects f-distill's gradient (for reverse KL:
    # Diff-Instruct's) in every example.
    teacher = GaussianMixture.isotropic(means=[[-1.0, 0.0], [1.0, 0.5]], std=[0.4, 0.6])
    fake = GaussianMixture.isotropic(means=[[0.5, -0.5], [0.0, 1.0]], std=[0.8, 0.3])
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    x_g = 1.5 * jax.random.normal(k1, (16, 2))
    kw = dict(sigma=jnp.linspace(0.1, 2.0, 16), noise=jax.random.normal(k2, (16, 2)))
    logit_fn = lambda x, s, _: teacher.log_prob(x, s) - fake.log_prob(x, s)
    x_t = x_g + kw['sigma'][:, None] * kw['noise']
    ratio = jnp.exp(logit_fn(x_t, kw['sigma'], None))

    def grads(x):
      out = {}
      for name in ('reverse_kl', 'jensen_shannon'):
        out[name] = (
            jax.grad(lambda y: diffratio_generator_loss(
                x_g=y, logit_fn=logit_fn, divergence=name, ratio_range=None, ratio_bins=0,
                **kw).sum())(x),
            jax.grad(lambda y: f_distill_generator_loss(
                x_g=y, teacher_denoiser=lambda x, s, _: teacher.denoise(x, s),
                fake_denoiser=lambda x, s, _: fake.denoise(x, s), ratio=ratio, divergence=name,
                normalize=False, **kw).sum())(x))
      out['diff_instruct'] = jax.grad(lambda y: diff_instruct_generator_loss(
          x_g=y, teacher_denoiser=lambda x, s, _: teacher.denoise(x, s),
          fake_denoiser=lambda x, s, _: fake.denoise(x, s), **kw).sum())(x)
      return out

    out = self.variant(grads)(x_g)
    for name in ('reverse_kl', 'jensen_shannon'):
      np.testing.assert_allclose(out[name][0], out[name][1], rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(out['reverse_kl'][0], out['diff_instruct'], rtol=1e-4, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_no_gradient_reaches_the_classifier(self):
    k1, k2 = jax.random.split(jax.random.PRNGKey(4))
    x_g = jax.random.normal(k1, (8, 2))
    noise = jax.random.normal(k2, (8, 2))

    def total(a):
      logit_fn = lambda x, s, _: jnp.sum(jnp.sin(a * x), axis=-1)
      return diffratio_generator_loss(x_g=x_g, sigma=jnp.ones(8), noise=noise, logit_fn=logit_fn,
                                      divergence='jensen_shannon').sum()

    np.testing.assert_array_equal(self.variant(jax.grad(total))(0.7), 0.0)

  def test_wrong_shapes_raise(self):
    x = jnp.ones((4, 2))
    with self.assertRaises(AssertionError):  # logits must be one per example
      diffratio_generator_loss(x_g=x, sigma=jnp.ones(4), noise=x, logit_fn=lambda x, s, _: x)
    with self.assertRaises(AssertionError):
      diffratio_generator_loss(x_g=x, sigma=jnp.ones(3), noise=x,
                               logit_fn=lambda x, s, _: x[:, 0])


class UniInstructTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_reverse_kl_is_sid_at_alpha_half_and_without_the_path_term_sim(self):
    # Algebraic identities, so any (here nonlinear) denoisers will do: values and gradients agree
    # example by example. loss(RKL) = ||u||^2 - 2 u.(y_f - x_g) = 2 SiD(alpha = 1/2), and
    # without the sampling-path term -2 u.(y_f - x_g) = SIM(L2) = 2 SiD(alpha = 1).
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    kw = dict(sigma=jnp.linspace(0.1, 3.0, 16), noise=jax.random.normal(k2, (16, 2)),
              teacher_denoiser=lambda x, s, _: jnp.tanh(x) / (1.0 + s[:, None]),
              fake_denoiser=lambda x, s, _: 0.3 * x + 0.2 * jnp.sin(2.0 * x))
    x_g = jax.random.normal(k1, (16, 2))
    pairs = {
        'full': (lambda x: uni_instruct_generator_loss(x_g=x, ratio=None, divergence='reverse_kl',
                                                       normalize=False, **kw),
                 lambda x: 2.0 * sid_generator_loss(x_g=x, alpha=0.5, normalize=False, **kw)),
        'grad_sim': (lambda x: uni_instruct_generator_loss(
            x_g=x, ratio=None, divergence='reverse_kl', normalize=False, sampling_path=False, **kw),
                     lambda x: sim_generator_loss(x_g=x, distance='l2', **kw)),
        'normalised': (lambda x: uni_instruct_generator_loss(x_g=x, ratio=None,
                                                             divergence='reverse_kl', **kw),
                       lambda x: 2.0 * sid_generator_loss(x_g=x, alpha=0.5, **kw)),
    }
    both = lambda x: {k: (a(x), b(x), jax.grad(lambda y: a(y).sum())(x),
                          jax.grad(lambda y: b(y).sum())(x)) for k, (a, b) in pairs.items()}
    for name, (v_ui, v_ref, g_ui, g_ref) in self.variant(both)(x_g).items():
      assert float(jnp.min(jnp.abs(v_ref))) > 1e-4, name
      np.testing.assert_allclose(v_ui, v_ref, rtol=1e-5, atol=1e-6, err_msg=name)
      np.testing.assert_allclose(g_ui, g_ref, rtol=1e-5, atol=1e-6, err_msg=name)

  @chex.variants(with_jit=True)  # many traced gradients: op by op is slow
  def test_gradient_is_the_expanded_divergence_gradient(self):
    # E[grad loss] = grad_theta E_{x ~ q_theta,sigma}[h(p / q_theta) ||D_q_theta - D_p||^2] for
    # every row, with the exact ratio and fake denoiser at the current theta. theta holds a mean
    # and a scale: the scale catches terms whose mean vanishes given x_t but not given z.
    def expanded(theta, name):
      x = (theta[0] + jnp.sqrt(_var(theta)) * XI)[:, None]
      r = jnp.exp(_log_p(x) - _log_q(x, theta))
      d_q = theta[0] + theta[1]**2 / _var(theta) * (x - theta[0])
      sq = jnp.sum((d_q - TEACHER.denoise(x, SIGMA))**2, axis=1)
      return jnp.sum(W1 * get_divergence(name).h(r) * sq)

    def grads(theta):
      out = {}
      for name in DIVERGENCES:
        surrogate = lambda t: jnp.sum(W * uni_instruct_generator_loss(
            x_g=_generator(t), sigma=SIGMAS, noise=N, teacher_denoiser=_teacher,
            fake_denoiser=_fake(theta), ratio=_exact_ratio(theta), divergence=name,
            normalize=False))
        out[name] = (jax.grad(surrogate)(theta), jax.grad(expanded)(theta, name))
      # The official forward-KL branch: r times Grad(SIM), without the 2 r h' b / sigma^2 term.
      official = lambda t: jnp.sum(W * _exact_ratio(theta) * sim_generator_loss(
          x_g=_generator(t), sigma=SIGMAS, noise=N, teacher_denoiser=_teacher,
          fake_denoiser=_fake(theta), distance='l2'))
      out['official_forward_kl'] = jax.grad(official)(theta)
      return out

    out = self.variant(grads)(THETA0)
    for name in DIVERGENCES:
      g_loss, g_div = out[name]
      assert float(jnp.min(jnp.abs(g_div))) > 1e-3, name  # a non-degenerate point
      np.testing.assert_allclose(g_loss, g_div, rtol=2e-3, atol=1e-6, err_msg=name)
    # That branch is exact for the mean, not for the scale.
    g_fkl = out['forward_kl'][1]
    np.testing.assert_allclose(out['official_forward_kl'][0], g_fkl[0], rtol=2e-3)
    assert abs(float(out['official_forward_kl'][1] / g_fkl[1]) - 1.0) > 0.05

  @chex.variants(with_jit=True, without_jit=True)
  def test_where_the_ratio_was_clipped_the_weights_derivatives_are_dropped(self):
    # ratio_in_range = 1 keeps the loss; 0 leaves -2 h b + h ||u||^2 (h' = h'' = 0): without the
    # sampling path that is the loss without its Diff-Instruct-type term, example by example.
    x_g, ratio, kw = _nonlinear_problem(4, 16, jnp.linspace(0.05, 2.0, 16))
    logits = jnp.log(ratio)
    inside = ratio_within_range(logits=logits, ratio_range=(0.5, 2.0))
    np.testing.assert_array_equal(inside, (ratio > 0.5) & (ratio < 2.0))
    assert 0 < float(inside.sum()) < 16
    np.testing.assert_array_equal(ratio_within_range(logits=logits, ratio_range=None), 1.0)

    def losses(x):
      ui = lambda **o: uni_instruct_generator_loss(x_g=x, ratio=ratio, divergence='neyman_chi2',
                                                   normalize=False, sampling_path=False, **o, **kw)
      return (ui(ratio_in_range=inside), ui(), ui(di_term=False),
              ui(ratio_in_range=jnp.ones(16)))

    masked, exact, no_di, all_inside = self.variant(losses)(x_g)
    np.testing.assert_allclose(masked, jnp.where(inside > 0, exact, no_di), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(all_inside, exact)
    assert float(jnp.max(jnp.abs(exact - no_di))) > 1e-3

  @chex.variants(with_jit=True)  # many traced gradients: op by op is slow
  def test_diff_instruct_is_reverse_kl_reweighted_over_noise_levels(self):
    # Thm. 3.1 in VE noise-level time (g^2 dt = d sigma^2): KL(q_sigma || p_sigma) =
    # KL(q_b || p_b) + int_sigma^b s F(s) ds, F = E_q ||s_q - s_p||^2. Diff-Instruct's expected
    # gradient is sigma^2 grad KL and Uni-Instruct's (reverse KL, no normaliser) sigma^4 grad F,
    # so for Diff-Instruct with noise levels uniform on [a, b]:
    #   int_a^b g_DI = M(b) g_DI(b) / b^2 + int_a^b M(s) / s^3 g_UI(s) ds,  M(s) = (s^3 - a^3) / 3.
    a, b = 0.3, 3.0
    nodes, weights = np.polynomial.legendre.leggauss(16)
    sig = jnp.asarray(a + (b - a) * (nodes + 1) / 2, jnp.float32)
    wts = jnp.asarray((b - a) / 2 * weights, jnp.float32)

    def gradients(sigma):
      kw = dict(sigma=jnp.full((Z.shape[0],), sigma), noise=N, teacher_denoiser=_teacher,
                fake_denoiser=_fake(THETA0))
      g_di = jax.grad(lambda t: jnp.sum(W * diff_instruct_generator_loss(
          x_g=_generator(t), **kw)))(THETA0)
      g_ui = jax.grad(lambda t: jnp.sum(W * uni_instruct_generator_loss(
          x_g=_generator(t), ratio=None, divergence='reverse_kl', normalize=False, **kw)))(THETA0)
      return g_di, g_ui

    def both():
      g_di, g_ui = jax.vmap(gradients)(sig)
      m = (sig**3 - a**3) / 3
      lhs = jnp.sum(wts[:, None] * g_di, axis=0)
      rhs = ((b**3 - a**3) / 3 / b**2 * gradients(jnp.float32(b))[0] +
             jnp.sum((wts * m / sig**3)[:, None] * g_ui, axis=0))
      return lhs, rhs

    lhs, rhs = self.variant(both)()
    assert float(jnp.min(jnp.abs(lhs))) > 1e-2
    np.testing.assert_allclose(rhs, lhs, rtol=2e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_clipped_di_weight_drops_the_di_term_exactly_where_its_weight_is_negative(self):
    # The Diff-Instruct-type term c / sigma^2 sg(u) . x_g contributes c / sigma^2 u to the
    # gradient in x_g; clipping c at 0 removes that where c < 0 and changes nothing elsewhere.
    n = 32
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(6), 3)
    sigma, noise = jnp.linspace(0.2, 2.0, n), jax.random.normal(k2, (n, 2))
    teacher = lambda x, s, _: jnp.tanh(x) / (1.0 + s[:, None])
    fake = lambda x, s, _: 0.3 * x + 0.8 * jnp.sin(2.0 * x)
    x_g, ratio = 2.0 * jax.random.normal(k1, (n, 2)), jnp.exp(jax.random.normal(k3, (n,)))
    grad = lambda clip: jax.grad(lambda x: uni_instruct_generator_loss(
        x_g=x, sigma=sigma, noise=noise, teacher_denoiser=teacher, fake_denoiser=fake,
        ratio=ratio, divergence='jensen_shannon', normalize=False,
        clip_di_weight=clip).sum())(x_g)
    g_exact, g_clip = self.variant(lambda: (grad(False), grad(True)))()
    x_t = x_g + sigma[:, None] * noise
    u = fake(x_t, sigma, None) - teacher(x_t, sigma, None)
    b = jnp.sum(u * (fake(x_t, sigma, None) - x_g), axis=1)
    h, dh, d2h = h_and_derivatives('jensen_shannon', ratio)
    c = ratio**2 * d2h * jnp.sum(u**2, axis=1) + 2 * ratio * dh * b
    assert 0 < int(jnp.sum(c < 0)) < n  # both cases occur
    expected = g_exact - (jnp.minimum(c, 0.0) / sigma**2)[:, None] * u
    np.testing.assert_allclose(g_clip, expected, rtol=1e-4, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_forward_kl_without_the_projection_ratio_term_is_r_times_grad_sim(self):
    # h = r: h'' = 0 and h - r h' = 0, so the only Diff-Instruct-type weight is 2 r b / sigma^2;
    # without it the loss is r * SIM(L2) example by example (the official forward-KL branch),
    # and with it the gradient in x_g differs by exactly c / sigma^2 u.
    x_g, ratio, kw = _nonlinear_problem(7, 16, jnp.linspace(0.2, 2.0, 16))
    loss = lambda x, term: uni_instruct_generator_loss(
        x_g=x, ratio=ratio, divergence='forward_kl', normalize=False, projection_ratio_term=term,
        **kw)
    sim = lambda x: ratio * sim_generator_loss(x_g=x, distance='l2', **kw)

    def both():
      return (loss(x_g, False), sim(x_g), jax.grad(lambda x: loss(x, False).sum())(x_g),
              jax.grad(lambda x: sim(x).sum())(x_g), jax.grad(lambda x: loss(x, True).sum())(x_g))

    v_ui, v_sim, g_ui, g_sim, g_exact = self.variant(both)()
    assert float(jnp.min(jnp.abs(v_sim))) > 1e-4
    np.testing.assert_allclose(v_ui, v_sim, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_ui, g_sim, rtol=1e-5, atol=1e-6)
    x_t = x_g + kw['sigma'][:, None] * kw['noise']
    y_f = kw['fake_denoiser'](x_t, kw['sigma'], None)
    u = y_f - kw['teacher_denoiser'](x_t, kw['sigma'], None)
    c = 2 * ratio * jnp.sum(u * (y_f - x_g), axis=1) / kw['sigma']**2
    np.testing.assert_allclose(g_exact, g_ui + c[:, None] * u, rtol=1e-4, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_weights_binned_by_noise_level_divide_each_example_by_its_levels_mean_h(self):
    # The loss is linear in (h, h', h''), so dividing all three by the mean of h within the
    # example's noise-level bin divides the example's loss, and its gradient, by that mean.
    n = 12
    sigma = jnp.where(jnp.arange(n) < 8, 0.05, 20.0)  # two bins: 8 small, 4 large
    x_g, ratio, kw = _nonlinear_problem(8, n, sigma)
    kw.update(ratio=ratio, divergence='neyman_chi2', normalize=False)
    loss = lambda x, bins: uni_instruct_generator_loss(x_g=x, weight_bins=bins, **kw)
    v, v_bins, g, g_bins = self.variant(lambda x: (
        loss(x, 0), loss(x, 10), jax.grad(lambda y: loss(y, 0).sum())(x),
        jax.grad(lambda y: loss(y, 10).sum())(x)))(x_g)
    h = 2.0 / kw['ratio']
    means = jnp.where(jnp.arange(n) < 8, jnp.mean(h[:8]), jnp.mean(h[8:]))
    assert float(jnp.max(means) / jnp.min(means)) > 1.1  # the two levels' means differ
    np.testing.assert_allclose(v_bins * means, v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_bins * means[:, None], g, rtol=1e-5, atol=1e-6)
    rkl = {**kw, 'ratio': None, 'divergence': 'reverse_kl'}  # h = 1: nothing to normalise
    np.testing.assert_allclose(uni_instruct_generator_loss(x_g=x_g, weight_bins=10, **rkl),
                               uni_instruct_generator_loss(x_g=x_g, **rkl), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_without_the_di_term_the_loss_is_h_times_sim(self):
    # di_term=False drops c / sigma^2 sg(u) . x_g; without the sampling path what is left,
    # -2 h u . (y_f - x_g), is h(r) times SIM(L2) example by example, for every row.
    x_g, ratio, kw = _nonlinear_problem(9, 16, jnp.linspace(0.05, 2.0, 16))

    def both(x):
      out = {}
      for name in ('pearson_chi2', 'neyman_chi2', 'jensen_shannon'):
        h = get_divergence(name).h(ratio)
        ui = lambda y, di: uni_instruct_generator_loss(
            x_g=y, ratio=ratio, divergence=name, normalize=False, sampling_path=False,
            di_term=di, **kw)
        sim = lambda y: h * sim_generator_loss(x_g=y, distance='l2', **kw)
        grad = lambda f: jax.grad(lambda y: f(y).sum())(x)
        out[name] = (ui(x, False), sim(x), grad(lambda y: ui(y, False)), grad(sim),
                     grad(lambda y: ui(y, True)))
      return out

    for name, (v_ui, v_sim, g_ui, g_sim, g_exact) in self.variant(both)(x_g).items():
      assert float(jnp.min(jnp.abs(v_sim))) > 1e-5, name
      np.testing.assert_allclose(v_ui, v_sim, rtol=1e-5, atol=1e-6, err_msg=name)
      np.testing.assert_allclose(g_ui, g_sim, rtol=1e-5, atol=1e-6, err_msg=name)
      assert float(jnp.max(jnp.abs(g_exact - g_ui))) > 1e-3, name  # the term was there

  def test_concave_rows_are_jensen_shannon_and_squared_hellinger(self):
    assert {n for n in DIVERGENCES if has_concave_h(n)} == {'jensen_shannon',
                                                            'squared_hellinger'}

  def test_bad_inputs_raise(self):
    x = jnp.ones((4, 2))
    kw = dict(sigma=jnp.ones(4), noise=x, teacher_denoiser=lambda x, s, _: x,
              fake_denoiser=lambda x, s, _: x)
    with pytest.raises(ValueError, match='needs the density ratio'):
      uni_instruct_generator_loss(x_g=x, ratio=None, divergence='forward_kl', **kw)
    with self.assertRaises(AssertionError):
      uni_instruct_generator_loss(x_g=x, ratio=jnp.ones(3), divergence='forward_kl', **kw)
    with pytest.raises(ValueError, match='unknown divergence'):
      uni_instruct_generator_loss(x_g=x, ratio=jnp.ones(4), divergence='chi2', **kw)
