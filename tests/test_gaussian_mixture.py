"""Exactness of the analytic Gaussian-mixture teacher."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from onestep_jax.data.gaussian_mixture import GaussianMixture, empirical_marginal



def _random_mixture(seed=0, k=3, d=3):
  rs = np.random.RandomState(seed)
  a = rs.randn(k, d, d)
  covs = a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(d)
  return GaussianMixture(weights=rs.rand(k) + 0.2, means=2 * rs.randn(k, d), covs=covs)


@pytest.mark.parametrize('sigma,alpha', [(0.0, 1.0), (0.7, 1.0), (2.0, 0.6)])
def test_log_prob_matches_scipy(sigma, alpha):
  gm = _random_mixture()
  x = np.random.RandomState(1).randn(5, gm.dim) * 2
  ref = np.log(sum(
      w * stats.multivariate_normal(alpha * m, alpha**2 * c + sigma**2 * np.eye(gm.dim)).pdf(x)
      for w, m, c in zip(gm.weights, gm.means, gm.covs)))
  np.testing.assert_allclose(gm.log_prob(x, sigma, alpha=alpha), ref, rtol=1e-4, atol=1e-4)


def test_score_is_gradient_of_log_prob_and_denoiser_is_tweedie():
  gm = _random_mixture()
  x = jnp.asarray(np.random.RandomState(2).randn(6, gm.dim))
  sigma = jnp.linspace(0.1, 3.0, 6)
  grad = jax.vmap(jax.grad(lambda xi, si: gm.log_prob(xi[None], si[None])[0]))(x, sigma)
  np.testing.assert_allclose(gm.score(x, sigma), grad, rtol=1e-4, atol=1e-5)
  # VE Tweedie: E[x0|x] = x + sigma^2 score; VP form: alpha E[x0|x] = x + sigma^2 score.
  np.testing.assert_allclose(gm.denoise(x, sigma), x + sigma[:, None]**2 * grad, rtol=1e-4,
                             atol=1e-5)
  alpha = 0.8
  s = gm.score(x, sigma, alpha=alpha)
  np.testing.assert_allclose(alpha * gm.denoise(x, sigma, alpha=alpha),
                             x + sigma[:, None]**2 * s, rtol=1e-4, atol=1e-5)


def test_denoiser_is_posterior_mean_by_monte_carlo():
  gm = GaussianMixture.isotropic(weights=[0.3, 0.7], means=[[-2.0], [2.0]], std=0.5)
  key = jax.random.PRNGKey(0)
  x0 = gm.sample(key, 400_000)
  xt = x0 + 1.0 * jax.random.normal(jax.random.PRNGKey(1), x0.shape)
  near = jnp.abs(xt[:, 0] - 0.5) < 0.02
  mc = float(jnp.sum(jnp.where(near, x0[:, 0], 0)) / jnp.sum(near))
  exact = float(gm.denoise(jnp.array([[0.5]]), 1.0)[0, 0])
  assert abs(mc - exact) < 0.05


def test_samples_have_exact_moments():
  gm = _random_mixture(seed=3)
  x, labels = gm.sample(jax.random.PRNGKey(0), 200_000, return_labels=True)
  np.testing.assert_allclose(np.mean(x, 0), gm.mean(), atol=0.03)
  np.testing.assert_allclose(np.cov(np.asarray(x).T), gm.covariance(), rtol=0.03, atol=0.03)
  np.testing.assert_allclose(np.bincount(labels, minlength=3) / len(labels), gm.weights, atol=0.01)


def test_clear_errors():
  with pytest.raises(ValueError, match='weights must have shape'):
    GaussianMixture(weights=[1.0], means=np.zeros((2, 2)), covs=np.stack([np.eye(2)] * 2))
  with pytest.raises(ValueError, match='positive definite'):
    GaussianMixture.diagonal(means=np.zeros((1, 2)), variances=[[1.0, -1.0]])
  gm = _random_mixture()
  with pytest.raises(ValueError, match=r'shape \[B, 3\]'):
    gm.log_prob(np.zeros((4, 2)))
  with pytest.raises(ValueError, match='noise level'):
    gm.score(np.zeros((4, 3)), np.ones(3))


def test_empirical_marginal_is_the_mixture_of_its_centres():
  """log q_sigma and E[c | x] of a few centres equal those of the Gaussian mixture with those
  means and a negligible width, at per-example noise levels."""
  k_c, k_x, k_s = jax.random.split(jax.random.PRNGKey(0), 3)
  centres = jax.random.normal(k_c, (5, 3))
  x = 1.5 * jax.random.normal(k_x, (64, 3))
  sigma = jnp.exp(jax.random.uniform(k_s, (64,), minval=-2.0, maxval=1.0))
  mixture = GaussianMixture.isotropic(means=np.asarray(centres), std=1e-4)
  log_q, denoised = empirical_marginal(x, sigma, centres)
  np.testing.assert_allclose(log_q, mixture.log_prob(x, sigma), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(denoised, mixture.denoise(x, sigma), rtol=1e-5, atol=1e-4)
