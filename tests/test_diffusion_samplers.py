"""Euler, Heun and stochastic EDM samplers on analytic Gaussian teachers."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.diffusion import noise_levels
from onestep_jax.diffusion import samplers

M, S = 1.0, 0.5  # teacher N(M, S^2) in one dimension
SIGMA_MAX = 80.0
NUM = 20_000


def gaussian_denoiser(x, sigma, labels=None):
  """Exact E[x0 | x0 + sigma eps = x] for x0 ~ N(M, S^2)."""
  del labels
  sigma = jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1))
  return M + S**2 / (S**2 + sigma**2) * (x - M)


def ode_solution(x_T, sigma_end):
  """Closed-form PF-ODE map from SIGMA_MAX to sigma_end: x - M scales as sqrt(S^2 + sigma^2)."""
  return M + math.sqrt(S**2 + sigma_end**2) / math.sqrt(S**2 + SIGMA_MAX**2) * (x_T - M)


def exact_start(num, seed=0, dtype=jnp.float32):
  """x_T from the exact marginal N(M, S^2 + SIGMA_MAX^2), so the exact ODE lands on N(M, S^2)."""
  eps = jax.random.normal(jax.random.key(seed), (num, 1), dtype)
  return M + math.sqrt(S**2 + SIGMA_MAX**2) * eps


def assert_gaussian_marginal(x, mean, var, num_se=4.0):
  x = np.asarray(x, np.float64).ravel()
  n = x.size
  assert abs(x.mean() - mean) < num_se * math.sqrt(var / n), (x.mean(), mean)
  assert abs(x.var() / var - 1) < num_se * math.sqrt(2 / n), (x.var(), var)


def edm_reference(x_T, *, num_steps, s_churn=0.0, s_min=0.0, s_max=float('inf')):
  """NumPy float64 transcription of EDM's Algorithm 2 with S_noise = 0 (churn raises sigma only)."""
  sigmas = np.asarray(noise_levels.karras_sigmas(num_steps), np.float64)
  x = np.asarray(x_T, np.float64)
  denoise = lambda x, s: M + S**2 / (S**2 + s**2) * (x - M)
  for i in range(num_steps):
    gamma = min(s_churn / num_steps, math.sqrt(2) - 1) if s_min <= sigmas[i] <= s_max else 0.0
    s_hat, s_next = sigmas[i] * (1 + gamma), sigmas[i + 1]
    d = (x - denoise(x, s_hat)) / s_hat
    x_next = x + (s_next - s_hat) * d
    if i < num_steps - 1:
      x_next = x + (s_next - s_hat) * 0.5 * (d + (x_next - denoise(x_next, s_next)) / s_next)
    x = x_next
  return x


def test_heun_is_edms_algorithm():
  x_T = exact_start(64)
  x = samplers.heun_sampler(gaussian_denoiser, x_T, sigmas=noise_levels.karras_sigmas(18))
  np.testing.assert_allclose(x, edm_reference(x_T, num_steps=18), rtol=1e-4, atol=1e-4)


def test_stochastic_churn_window_follows_edm():
  """With S_noise = 0 the churn only raises sigma; the result is EDM's, window and cap included."""
  x_T = exact_start(64)
  kwargs = dict(s_churn=30.0, s_min=0.05, s_max=10.0)
  x = samplers.stochastic_sampler(gaussian_denoiser, x_T, sigmas=noise_levels.karras_sigmas(18),
                                  key=jax.random.key(0), s_noise=0.0, **kwargs)
  np.testing.assert_allclose(x, edm_reference(x_T, num_steps=18, **kwargs), rtol=1e-4, atol=1e-4)


def test_stochastic_without_churn_is_heun():
  x_T = exact_start(64)
  sigmas = noise_levels.karras_sigmas(10)
  np.testing.assert_array_equal(
      samplers.stochastic_sampler(gaussian_denoiser, x_T, sigmas=sigmas, key=jax.random.key(1)),
      samplers.heun_sampler(gaussian_denoiser, x_T, sigmas=sigmas))


def test_heun_map_approaches_the_closed_form_ode_solution():
  """For a Gaussian teacher the Heun map is linear in x_T; at N = 18 (35 NFE) its slope is 5.5% too
  large (EDM float64 gives the same), at N = 128 (255 NFE) within 0.1%."""
  x_T = exact_start(256)
  exact = ode_solution(x_T, 0.0)
  for num_steps, rel_tol in ((18, 0.06), (128, 1e-3)):
    x = samplers.heun_sampler(gaussian_denoiser, x_T, sigmas=noise_levels.karras_sigmas(num_steps))
    np.testing.assert_array_less(np.abs(x - exact), rel_tol * np.abs(exact - M) + 1e-4)


def _errors(sampler, step_counts):
  """Max error at sigma_min (no final step to 0) against the closed form, in float64."""
  with jax.enable_x64(True):
    x_T = exact_start(64, dtype=jnp.float64)
    errors = []
    for n in step_counts:
      sigmas = noise_levels.karras_sigmas(n, dtype=jnp.float64)[:-1]
      x = sampler(gaussian_denoiser, x_T, sigmas=sigmas, dtype=jnp.float64)
      errors.append(float(jnp.max(jnp.abs(x - ode_solution(x_T, 0.002)))))
  return np.array(errors)


def test_euler_converges_at_first_order():
  errors = _errors(samplers.euler_sampler, (16, 32, 64))
  ratios = errors[:-1] / errors[1:]  # measured 1.97, 1.99
  assert np.all((ratios > 1.8) & (ratios < 2.2)), ratios


def test_heun_converges_at_second_order():
  errors = _errors(samplers.heun_sampler, (16, 32, 64))
  ratios = errors[:-1] / errors[1:]  # measured 4.6, 4.3
  assert np.all((ratios > 3.5) & (ratios < 5.0)), ratios


def test_heun_reaches_the_gaussian_marginal():
  x = samplers.heun_sampler(gaussian_denoiser, exact_start(NUM, seed=1),
                            sigmas=noise_levels.karras_sigmas(128))
  assert_gaussian_marginal(x, M, S**2)


def test_stochastic_sampler_reaches_the_gaussian_marginal():
  x = samplers.stochastic_sampler(gaussian_denoiser, exact_start(NUM, seed=2),
                                  sigmas=noise_levels.karras_sigmas(256), key=jax.random.key(3),
                                  s_churn=40.0, s_min=0.05, s_max=50.0)
  assert_gaussian_marginal(x, M, S**2)


def test_heun_reaches_a_mixture_and_uses_labels():
  gm = GaussianMixture.isotropic(weights=[0.7, 0.3], means=[[-1.5, 0.0], [1.5, 1.0]], std=0.3)
  components = [GaussianMixture.isotropic(means=gm.means[k:k + 1], std=0.3) for k in range(2)]

  def denoiser(x, sigma, labels):
    if labels is None:
      return gm.denoise(x, sigma)
    per_class = jnp.stack([c.denoise(x, sigma) for c in components], axis=1)  # [B, K, D]
    return jnp.einsum('bk,bkd->bd', labels, per_class)

  n = 4000
  x0, classes = gm.sample(jax.random.key(4), n, return_labels=True)
  x_T = x0 + SIGMA_MAX * jax.random.normal(jax.random.key(5), x0.shape)
  sigmas = noise_levels.karras_sigmas(64)
  x = np.asarray(samplers.heun_sampler(denoiser, x_T, sigmas=sigmas, labels=None))
  nearest = np.argmin(((x[:, None] - gm.means[None])**2).sum(-1), axis=1)
  assert abs(nearest.mean() - 0.3) < 4 * math.sqrt(0.21 / n)
  np.testing.assert_allclose(x.mean(0), gm.mean(), atol=4 * math.sqrt(gm.covariance().max() / n))
  onehot = jax.nn.one_hot(classes, 2)
  x = np.asarray(samplers.heun_sampler(denoiser, x_T, sigmas=sigmas, labels=onehot))
  np.testing.assert_allclose(x[classes == 1].mean(0), gm.means[1], atol=0.05)
  np.testing.assert_allclose(x[classes == 1].std(0), 0.3, rtol=0.1)


class _CountingDenoiser:
  """Counts executed denoiser calls (inside scan and cond, jitted or not) with a host callback."""

  def __init__(self):
    self.calls = 0

  def _increment(self):
    self.calls += 1

  def __call__(self, x, sigma, labels=None):
    jax.debug.callback(self._increment)
    return gaussian_denoiser(x, sigma)


@pytest.mark.parametrize('name', sorted(samplers.SAMPLERS))
@pytest.mark.parametrize('num_steps', [1, 4])
def test_nfe_counts(name, num_steps):
  sampler = samplers.SAMPLERS[name]
  extra = dict(key=jax.random.key(0), s_churn=1.0) if name == 'stochastic' else {}
  for ends_at_zero, jit in ((True, False), (True, True), (False, False)):
    sigmas = noise_levels.karras_sigmas(num_steps)
    sigmas = sigmas if ends_at_zero else sigmas[:-1] if num_steps > 1 else jnp.array([80.0, 1.0])
    denoiser = _CountingDenoiser()
    run = functools.partial(sampler, denoiser, sigmas=sigmas, **extra)
    jax.block_until_ready((jax.jit(run) if jit else run)(exact_start(4)))
    jax.effects_barrier()
    steps = sigmas.shape[0] - 1
    assert denoiser.calls == samplers.nfe(name, steps, ends_at_zero=ends_at_zero)
  assert samplers.nfe(sampler, 18) == {'euler': 18, 'heun': 35, 'stochastic': 35}[name]


def test_trajectory_jit_and_dtypes():
  x_T = exact_start(8)
  sigmas = noise_levels.karras_sigmas(6)
  run = jax.jit(functools.partial(samplers.heun_sampler, gaussian_denoiser, return_trajectory=True))
  x, trajectory = run(x_T, sigmas=sigmas)
  assert trajectory.shape == (7, 8, 1)
  np.testing.assert_array_equal(trajectory[0], x_T)
  np.testing.assert_array_equal(trajectory[-1], x)
  np.testing.assert_allclose(x, samplers.heun_sampler(gaussian_denoiser, x_T, sigmas=sigmas),
                             rtol=1e-6, atol=1e-6)
  with jax.enable_x64(True):
    x64 = samplers.euler_sampler(gaussian_denoiser, x_T, sigmas=sigmas, dtype=jnp.float64)
    assert x64.dtype == jnp.float32  # float64 inside, the caller's dtype out


def test_bad_inputs_are_named():
  x_T = exact_start(4)
  with pytest.raises(ValueError, match='needs 64-bit JAX'):
    samplers.heun_sampler(gaussian_denoiser, x_T, sigmas=noise_levels.karras_sigmas(4),
                          dtype=jnp.float64)
  with pytest.raises(ValueError, match='sigmas must be a 1-D array of at least 2'):
    samplers.euler_sampler(gaussian_denoiser, x_T, sigmas=jnp.array([80.0]))
  with pytest.raises(ValueError, match='floating dtype'):
    samplers.euler_sampler(gaussian_denoiser, x_T, sigmas=jnp.array([80.0, 0.0]), dtype=jnp.int32)
  with pytest.raises(ValueError, match=r"unknown sampler 'dpm'.*'euler', 'heun', 'stochastic'"):
    samplers.nfe('dpm', 4)
  with pytest.raises(ValueError, match='num_steps must be a positive int'):
    samplers.nfe('heun', 0)
