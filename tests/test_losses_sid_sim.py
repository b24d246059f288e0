"""SiD and SIM generator losses against autodiff gradients of score divergences on Gaussians.

Set-up: a 1-D generator x_g = G_theta(z) = mu + s z, theta = (mu, s), so q_theta = N(mu, s^2) and
its noisy marginal N(mu, s^2 + sigma^2) has the exact denoiser
D_q_theta(x) = mu + s^2 / (s^2 + sigma^2) (x - mu); the teacher is a two-component mixture with
exact denoisers. Expectations over (z, n) ~ N(0, 1)^2 use a 40 x 40 Gauss-Hermite product rule, so
identities that hold in expectation are checked essentially exactly.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.losses.sid import sid_generator_loss
from onestep_jax.losses.sim import sim_generator_loss

SIGMA = 0.7
THETA0 = jnp.array([0.3, 0.6])  # (mu, s) of the generator
TEACHER = GaussianMixture.isotropic(means=[[-1.0], [1.5]], std=[0.5, 0.7], weights=[0.3, 0.7])


def _teacher(x, s, _):
  return TEACHER.denoise(x, s)


def _quadrature(num=40):
  nodes, weights = np.polynomial.hermite_e.hermegauss(num)  # weight exp(-x^2 / 2)
  weights = weights / weights.sum()
  z, n = np.meshgrid(nodes, nodes, indexing='ij')
  w = np.outer(weights, weights).ravel()
  return (jnp.asarray(z.reshape(-1, 1), jnp.float32), jnp.asarray(n.reshape(-1, 1), jnp.float32),
          jnp.asarray(w, jnp.float32))


Z, N, W = _quadrature()
SIGMAS = jnp.full((Z.shape[0],), SIGMA)


def _gaussian_denoiser(x, theta):
  mu, s = theta[0], theta[1]
  return mu + s**2 / (s**2 + SIGMA**2) * (x - mu)


def _mixture_fake(theta):
  """The exact denoiser of q_theta's noisy marginal from the GaussianMixture class."""
  gm = GaussianMixture.isotropic(means=[[float(theta[0])]], std=float(theta[1]))
  return lambda x, s, _: gm.denoise(x, s)


def _frozen_fake(theta):
  """The same denoiser in closed form with theta held fixed (fewer ops than the mixture class)."""
  theta = jax.lax.stop_gradient(theta)
  return lambda x, s, _: _gaussian_denoiser(x, theta)


def _generator(theta):
  return theta[0] + theta[1] * Z


class SidTest(chex.TestCase):

  def test_closed_form_fake_denoiser_matches_the_mixture_class(self):
    x = _generator(THETA0) + SIGMA * N  # the quadrature points
    np.testing.assert_allclose(_gaussian_denoiser(x, THETA0),
                               _mixture_fake(THETA0)(x, SIGMAS, None), rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_alpha_half_gives_half_the_fisher_divergence_gradient(self):
    # F(theta) = E_{x_t ~ q_theta,sigma} ||D_q_theta(x_t) - D_teacher(x_t)||^2, differentiated
    # through the samples and through D_q_theta. The identity E_q[h . dD_q] =
    # -d/dtheta|samples E[h(x_t) . (D_q(x_t) - x_g)] gives grad F = 2 grad E[SiD loss at
    # alpha = 1/2, w = 1] with the fake denoiser frozen at the current theta.
    fake = _frozen_fake(THETA0)

    def fisher(theta):
      x_t = _generator(theta) + SIGMA * N
      return jnp.sum(W * jnp.sum((_gaussian_denoiser(x_t, theta) -
                                  TEACHER.denoise(x_t, SIGMAS))**2, axis=1))

    def sid(theta):
      loss = sid_generator_loss(x_g=_generator(theta), sigma=SIGMAS, noise=N,
                                teacher_denoiser=_teacher, fake_denoiser=fake, alpha=0.5,
                                normalize=False)
      return jnp.sum(W * loss)

    grad_f, grad_sid = self.variant(lambda t: (jax.grad(fisher)(t), jax.grad(sid)(t)))(THETA0)
    assert float(jnp.min(jnp.abs(grad_f))) > 1e-2  # a non-degenerate point
    np.testing.assert_allclose(grad_sid, 0.5 * grad_f, rtol=2e-4, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_on_linear_denoisers(self):
    x_g = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    noise = jnp.array([[0.5, 1.0], [-1.0, 0.0]])
    sigma = jnp.array([1.0, 2.0])
    a, b, alpha = 0.5, 0.8, 1.2
    loss = self.variant(lambda x: sid_generator_loss(
        x_g=x, sigma=sigma, noise=noise, teacher_denoiser=lambda x, s, _: a * x,
        fake_denoiser=lambda x, s, _: b * x, alpha=alpha))(x_g)
    xg, x_t = np.asarray(x_g), np.asarray(x_g + sigma[:, None] * noise)
    y_r, y_f = a * x_t, b * x_t
    w = np.abs(xg - y_r).mean(axis=1)
    expected = ((y_r - y_f) * ((y_r - xg) - alpha * (y_r - y_f))).sum(axis=1) / w
    np.testing.assert_allclose(loss, expected, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_normalizer_is_a_constant_per_example(self):
    x_g = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    noise = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    sigma = jnp.array([0.2, 0.5, 1.0, 3.0])
    teacher = lambda x, s, _: jnp.tanh(x)
    fake = lambda x, s, _: 0.3 * x + 0.1 * x**2
    kw = dict(sigma=sigma, noise=noise, teacher_denoiser=teacher, fake_denoiser=fake)
    grad_n = self.variant(jax.grad(lambda x: sid_generator_loss(x_g=x, **kw).sum()))(x_g)
    grad_u = self.variant(jax.grad(
        lambda x: sid_generator_loss(x_g=x, normalize=False, **kw).sum()))(x_g)
    w = jnp.mean(jnp.abs(x_g - teacher(x_g + sigma[:, None] * noise, sigma, None)), axis=1)
    np.testing.assert_allclose(grad_n, grad_u / w[:, None], rtol=1e-5, atol=1e-6)

  def test_wrong_shapes_raise(self):
    x = jnp.ones((4, 2))
    identity = lambda x, s, _: x
    kw = dict(teacher_denoiser=identity, fake_denoiser=identity)
    with self.assertRaises(AssertionError):
      sid_generator_loss(x_g=x, sigma=jnp.ones(4), noise=jnp.ones((4, 3)), **kw)
    with self.assertRaises(AssertionError):
      sid_generator_loss(x_g=x, sigma=jnp.ones(()), noise=x, **kw)
    with self.assertRaises(AssertionError):
      sid_generator_loss(x_g=x, sigma=jnp.ones(4), noise=x, teacher_denoiser=identity,
                         fake_denoiser=lambda x, s, _: x[:2])


class SimTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_is_the_divergence_gradient_with_frozen_samples(self):
    # D(theta) = E_{x_t ~ sg(q_theta)} d(D_q_theta(x_t) - D_teacher(x_t)): samples fixed at
    # THETA0, only the fake denoiser depends on theta; for d = ||.||^2 and pseudo-Huber.
    # (A smaller c makes d' vary faster and needs more quadrature nodes for the same accuracy.)
    c = 1.0
    distances = {'l2': lambda sq: sq, 'pseudo_huber': lambda sq: jnp.sqrt(sq + c**2) - c}
    x_t0 = _generator(THETA0) + SIGMA * N
    fake = _frozen_fake(THETA0)

    def divergence(theta, distance):
      u = _gaussian_denoiser(x_t0, theta) - TEACHER.denoise(x_t0, SIGMAS)
      return jnp.sum(W * distances[distance](jnp.sum(u**2, axis=1)))

    def sim(theta, distance, detach=False):
      return jnp.sum(W * sim_generator_loss(x_g=_generator(theta), sigma=SIGMAS, noise=N,
                                            teacher_denoiser=_teacher, fake_denoiser=fake,
                                            distance=distance, c=c, detach_direction=detach))

    def grads(t):
      out = {}
      for name in distances:
        out[name] = (jax.grad(divergence)(t, name), jax.grad(sim)(t, name))
      out['l2_detached'] = (out['l2'][0], jax.grad(sim)(t, 'l2', True))
      return out

    out = self.variant(grads)(THETA0)
    for name in distances:
      grad_d, grad_sim = out[name]
      assert float(jnp.min(jnp.abs(grad_d))) > 1e-2, name  # a non-degenerate point
      np.testing.assert_allclose(grad_sim, grad_d, rtol=2e-4, atol=1e-6, err_msg=name)
    # Stopping the gradient through d'(u) drops E[(dx_t/dtheta) J_{d'}(x_t) (D_q(x_t) - x_g)],
    # which vanishes when dx_t/dtheta is constant (the mean) but not for the scale, where
    # dx_t/ds = z is correlated with D_q(x_t) - x_g: the detached variant is exact for mu only.
    grad_d, grad_det = out['l2_detached']
    np.testing.assert_allclose(grad_det[0], grad_d[0], rtol=2e-4)
    assert abs(float(grad_det[1] / grad_d[1]) - 1.0) > 0.1

  @chex.variants(with_jit=True, without_jit=True)
  def test_l2_is_twice_sid_at_alpha_one(self):
    # -2u.(y_f - x_g) with u = y_f - y_r equals 2 (y_r - y_f).((y_r - x_g) - (y_r - y_f)):
    # the same function of x_g, so values and gradients agree example by example.
    # It is an algebraic identity, so any (here nonlinear) denoisers will do.
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    x_g = jax.random.normal(k1, (16, 2))
    noise = jax.random.normal(k2, (16, 2))
    kw = dict(sigma=jnp.linspace(0.1, 3.0, 16), noise=noise,
              teacher_denoiser=lambda x, s, _: jnp.tanh(x) / (1.0 + s[:, None]),
              fake_denoiser=lambda x, s, _: 0.3 * x + 0.2 * jnp.sin(2.0 * x))
    sim = lambda x: sim_generator_loss(x_g=x, distance='l2', **kw)
    sid = lambda x: 2.0 * sid_generator_loss(x_g=x, alpha=1.0, normalize=False, **kw)
    both = lambda x: (sim(x), sid(x), jax.grad(lambda y: sim(y).sum())(x),
                      jax.grad(lambda y: sid(y).sum())(x))
    v_sim, v_sid, g_sim, g_sid = self.variant(both)(x_g)
    assert float(jnp.min(jnp.abs(v_sim))) > 1e-3
    np.testing.assert_allclose(v_sim, v_sid, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_sim, g_sid, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_pseudo_huber_default_c(self):
    # Per example: -(u / sqrt(||u||^2 + c^2)).(y_f - x_g), c = 0.00054 sqrt(d) by default.
    x_g = jnp.array([[1.0, 2.0, 0.0, -1.0]])
    noise = jnp.zeros_like(x_g)
    loss = self.variant(lambda x: sim_generator_loss(
        x_g=x, sigma=jnp.ones(1), noise=noise, teacher_denoiser=lambda x, s, _: 0.5 * x,
        fake_denoiser=lambda x, s, _: 2.0 * x))(x_g)
    xg = np.asarray(x_g)
    u, c = 1.5 * xg, 0.00054 * 2.0
    expected = -np.sum(u / np.sqrt(np.sum(u**2) + c**2) * (2.0 * xg - xg))
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)

  def test_bad_inputs_raise(self):
    x = jnp.ones((4, 2))
    identity = lambda x, s, _: x
    kw = dict(teacher_denoiser=identity, fake_denoiser=identity)
    with self.assertRaises(ValueError):
      sim_generator_loss(x_g=x, sigma=jnp.ones(4), noise=x, distance='l1', **kw)
    with self.assertRaises(AssertionError):
      sim_generator_loss(x_g=x, sigma=jnp.ones(4), noise=jnp.ones((2, 2)), **kw)
    with self.assertRaises(AssertionError):
      sim_generator_loss(x_g=x, sigma=jnp.ones(5), noise=x, **kw)
