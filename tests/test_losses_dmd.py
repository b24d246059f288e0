"""DMD's distribution-matching surrogate and regression loss: injected gradients, closed forms."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.losses.diff_instruct import diff_instruct_generator_loss
from onestep_jax.losses.dmd import dmd_generator_loss, regression_loss

# Exact denoisers of two different 2-D mixtures: a "teacher" and a "fake" distribution.
_TEACHER = GaussianMixture.isotropic(means=[[-1.0, 0.0], [1.0, 0.5]], std=[0.4, 0.6],
                                     weights=[0.3, 0.7])
_FAKE = GaussianMixture.isotropic(means=[[0.5, -0.5], [0.0, 1.0]], std=[0.8, 0.3])


def _teacher(x, s, _):
  return _TEACHER.denoise(x, s)


def _fake(x, s, _):
  return _FAKE.denoise(x, s)


def _batch(key, b=16, d=2):
  k1, k2, k3 = jax.random.split(key, 3)
  x_g = 1.5 * jax.random.normal(k1, (b, d))
  noise = jax.random.normal(k2, (b, d))
  sigma = jnp.exp(jax.random.uniform(k3, (b,), minval=-2.0, maxval=1.0))
  return x_g, sigma, noise


class DmdGeneratorLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_injects_the_normalized_denoiser_difference(self):
    # Nonlinear denoisers on images [B, H, W, C]: if any gradient reached the denoisers' inputs
    # the gradient would pick up their Jacobians and differ from g.
    x_g = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 2))
    noise = jax.random.normal(jax.random.PRNGKey(1), x_g.shape)
    sigma = jnp.array([0.3, 1.0, 2.5])
    teacher = lambda x, s, _: jnp.tanh(x) * 0.5
    fake = lambda x, s, _: x**2 / (1.0 + s[:, None, None, None])

    def total(x):
      return jnp.sum(dmd_generator_loss(x_g=x, sigma=sigma, noise=noise,
                                        teacher_denoiser=teacher, fake_denoiser=fake))

    grad = self.variant(jax.grad(total))(x_g)
    x_t = x_g + sigma[:, None, None, None] * noise
    w = np.mean(np.abs(np.asarray(x_g - teacher(x_t, sigma, None))).reshape(3, -1), axis=1)
    expected = (fake(x_t, sigma, None) - teacher(x_t, sigma, None)) / w[:, None, None, None]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    # The value is 0.5 ||g||^2 per example.
    loss = self.variant(lambda x: dmd_generator_loss(
        x_g=x, sigma=sigma, noise=noise, teacher_denoiser=teacher, fake_denoiser=fake))(x_g)
    chex.assert_shape(loss, (3,))
    np.testing.assert_allclose(loss, 0.5 * np.sum(np.asarray(expected).reshape(3, -1)**2, 1),
                               rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_is_diff_instructs_up_to_a_positive_per_example_factor(self):
    x_g, sigma, noise = _batch(jax.random.PRNGKey(2))
    kw = dict(sigma=sigma, noise=noise, teacher_denoiser=_teacher, fake_denoiser=_fake)
    grads = lambda x: (
        jax.grad(lambda y: dmd_generator_loss(x_g=y, **kw).sum())(x),
        jax.grad(lambda y: dmd_generator_loss(x_g=y, normalize=False, **kw).sum())(x),
        jax.grad(lambda y: diff_instruct_generator_loss(x_g=y, **kw).sum())(x))
    g_dmd, g_unnormalized, g_di = self.variant(grads)(x_g)
    # Without the normaliser DMD injects Diff-Instruct's gradient D_fake - D_teacher.
    np.testing.assert_allclose(g_unnormalized, g_di, rtol=1e-5, atol=1e-6)
    assert float(jnp.min(jnp.linalg.norm(g_di, axis=1))) > 1e-2  # the mixtures differ
    # With it, per example the ratio g_di / g_dmd is the same in every dimension, positive, and
    # equal to DMD's normaliser mean|x_g - D_teacher(x_t)| (arXiv 2311.18828, Eq. 8).
    ratio = np.asarray(g_di / g_dmd)
    np.testing.assert_allclose(ratio[:, 0], ratio[:, 1], rtol=1e-4)
    assert np.all(ratio > 0)
    x_t = x_g + sigma[:, None] * noise
    w = np.mean(np.abs(np.asarray(x_g - _TEACHER.denoise(x_t, sigma))), axis=1)
    np.testing.assert_allclose(ratio[:, 0], w, rtol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_no_gradient_reaches_denoiser_parameters(self):
    x_g, sigma, noise = _batch(jax.random.PRNGKey(4))

    def total(theta):
      fake = lambda x, s, _: theta * x + jnp.sin(theta * x)
      teacher = lambda x, s, _: theta**2 * x
      return dmd_generator_loss(x_g=x_g, sigma=sigma, noise=noise, teacher_denoiser=teacher,
                                fake_denoiser=fake).sum()

    np.testing.assert_array_equal(self.variant(jax.grad(total))(0.7), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_zero_normalizer_is_clipped(self):
    # A teacher that returns x_g exactly makes mean|x_g - D_teacher| = 0; the gradient stays finite.
    x_g, sigma, noise = _batch(jax.random.PRNGKey(5))
    teacher = lambda x, s, _: x - s[:, None] * noise
    fake = lambda x, s, _: x
    grad = self.variant(jax.grad(lambda x: dmd_generator_loss(
        x_g=x, sigma=sigma, noise=noise, teacher_denoiser=teacher, fake_denoiser=fake).sum()))(x_g)
    np.testing.assert_allclose(grad, sigma[:, None] * noise / 1e-5, rtol=1e-3)

  def test_wrong_shapes_raise(self):
    x_g, sigma, noise = _batch(jax.random.PRNGKey(6), b=4)
    identity = lambda x, s, _: x
    kw = dict(teacher_denoiser=identity, fake_denoiser=identity)
    with self.assertRaises(AssertionError):
      dmd_generator_loss(x_g=x_g, sigma=sigma, noise=noise[:3], **kw)
    with self.assertRaises(AssertionError):
      dmd_generator_loss(x_g=x_g, sigma=sigma[:3], noise=noise, **kw)
    with self.assertRaises(AssertionError):
      dmd_generator_loss(x_g=x_g[:, 0], sigma=sigma, noise=noise[:, 0], **kw)
    with self.assertRaises(AssertionError):  # a denoiser that returns the wrong shape
      dmd_generator_loss(x_g=x_g, sigma=sigma, noise=noise, teacher_denoiser=identity,
                         fake_denoiser=lambda x, s, _: x[:, :1])


class RegressionLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_and_default_c(self):
    x_g = jnp.array([[3.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    target = jnp.zeros_like(x_g)
    l2 = self.variant(lambda x: regression_loss(x_g=x, target=target))(x_g)
    np.testing.assert_allclose(l2, [25.0, 4.0])
    ph = self.variant(lambda x: regression_loss(x_g=x, target=target, distance='pseudo_huber',
                                                c=1.0))(x_g)
    np.testing.assert_allclose(ph, [math.sqrt(26.0) - 1.0, math.sqrt(5.0) - 1.0], rtol=1e-6)
    c = 0.00054 * math.sqrt(4)  # default: 0.00054 sqrt(d)
    ph_default = self.variant(lambda x: regression_loss(x_g=x, target=target,
                                                        distance='pseudo_huber'))(x_g)
    np.testing.assert_allclose(ph_default, [math.sqrt(25 + c**2) - c, math.sqrt(4 + c**2) - c],
                               rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_pseudo_huber_gradient_is_quadratic_near_zero_and_bounded_far_away(self):
    c = 2.0
    target = jnp.zeros((2, 3))
    x_g = jnp.array([[1e-3, -2e-3, 5e-4], [30.0, -40.0, 0.0]])
    grad = self.variant(jax.grad(lambda x: regression_loss(
        x_g=x, target=target, distance='pseudo_huber', c=c).sum()))(x_g)
    # Near zero d ~ ||r||^2 / (2c): gradient r / c. Far away the gradient is a unit vector.
    np.testing.assert_allclose(grad[0], x_g[0] / c, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(grad[1]), 50.0 / math.sqrt(2500.0 + c**2),
                               rtol=1e-6)

  def test_bad_inputs_raise(self):
    x = jnp.ones((2, 3))
    with self.assertRaises(ValueError):
      regression_loss(x_g=x, target=x, distance='lpips')
    with self.assertRaises(AssertionError):
      regression_loss(x_g=x, target=jnp.ones((2, 4)))
