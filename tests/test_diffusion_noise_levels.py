"""EDM discretisation and training-time noise / time proposals."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.diffusion import noise_levels

NUM = 50_000


def test_karras_sigmas_match_the_closed_form():
  n, rho = 18, 7.0
  i = np.arange(n)
  expected = (80.0**(1 / rho) + i / (n - 1) * (0.002**(1 / rho) - 80.0**(1 / rho)))**rho
  sigmas = noise_levels.karras_sigmas(n)
  assert sigmas.shape == (n + 1,) and sigmas.dtype == jnp.float32
  np.testing.assert_allclose(sigmas[:-1], expected, rtol=2e-6)
  np.testing.assert_allclose(sigmas[0], 80.0, rtol=1e-6)
  np.testing.assert_allclose(sigmas[-2], 0.002, rtol=1e-5)
  assert sigmas[-1] == 0.0
  assert np.all(np.diff(np.asarray(sigmas)) < 0)


def test_karras_sigmas_single_step_and_custom_range():
  np.testing.assert_allclose(noise_levels.karras_sigmas(1), [80.0, 0.0])
  sigmas = noise_levels.karras_sigmas(4, sigma_min=0.01, sigma_max=10.0, rho=1.0)
  np.testing.assert_allclose(sigmas, [10.0, 6.67, 3.34, 0.01, 0.0], rtol=1e-5)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_steps=0), 'num_steps must be a positive int'),
    (dict(num_steps=2.0), 'num_steps must be a positive int'),
    (dict(num_steps=4, sigma_min=1.0, sigma_max=0.5), 'sigma_min < sigma_max'),
    (dict(num_steps=4, rho=0.0), 'rho must be positive'),
])
def test_karras_sigmas_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    noise_levels.karras_sigmas(**kwargs)


def test_log_normal_sigma_moments():
  sigma = noise_levels.sample_log_normal_sigma(jax.random.key(0), NUM)
  assert sigma.shape == (NUM,) and bool(jnp.all(sigma > 0))
  log_sigma = np.log(np.asarray(sigma))
  np.testing.assert_allclose(log_sigma.mean(), -1.2, atol=4 * 1.2 / np.sqrt(NUM))
  np.testing.assert_allclose(log_sigma.std(), 1.2, rtol=0.02)


def test_karras_index_sigma_lives_on_the_ascending_grid():
  grid = np.asarray(noise_levels.karras_sigmas(1000))[-2::-1]
  sigma = np.asarray(noise_levels.sample_karras_index_sigma(jax.random.key(1), (NUM,),
                                                            min_index=20, max_index=980))
  index = np.searchsorted(grid, sigma)
  np.testing.assert_array_equal(grid[index], sigma)
  assert index.min() == 20 and index.max() == 979
  counts = np.bincount(index - 20, minlength=960)
  assert counts.max() < 3 * NUM / 960  # roughly uniform over the 960 allowed indices
  full = noise_levels.sample_karras_index_sigma(jax.random.key(2), (4, 5), num_levels=3)
  assert full.shape == (4, 5)
  assert set(np.unique(full)) <= set(np.asarray(noise_levels.karras_sigmas(3))[:-1].tolist())
  with pytest.raises(ValueError, match=r'\(min_index, max_index\) must be \(lo, hi\)'):
    noise_levels.sample_karras_index_sigma(jax.random.key(0), 2, min_index=10, max_index=10)


def test_logit_normal_time_moments():
  t = np.asarray(noise_levels.sample_logit_normal_time(jax.random.key(3), NUM, mean=-0.8, std=1.0))
  assert t.min() > 0 and t.max() < 1
  logit = np.log(t) - np.log1p(-t)
  np.testing.assert_allclose(logit.mean(), -0.8, atol=4 / np.sqrt(NUM))
  np.testing.assert_allclose(logit.std(), 1.0, rtol=0.02)


def test_trigflow_time_is_log_normal_in_edm_sigma():
  t = np.asarray(noise_levels.sample_trigflow_time(jax.random.key(4), NUM, p_mean=-1.0, p_std=1.6,
                                                   sigma_data=0.5), np.float64)
  assert t.min() > 0 and t.max() < np.pi / 2
  tau = np.log(0.5 * np.tan(t))  # tan t = exp(tau) / sigma_d
  np.testing.assert_allclose(tau.mean(), -1.0, atol=4 * 1.6 / np.sqrt(NUM))
  np.testing.assert_allclose(tau.std(), 1.6, rtol=0.02)
