"""Schedules and prediction conversions, checked against the analytic Gaussian-mixture teacher."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.diffusion import parameterization as param
from onestep_jax.diffusion import schedules

# Each schedule with a range of times on which float32 conversions are well conditioned.
SCHEDULES = {
    've': (schedules.VESchedule(), 0.1, 10.0),
    'vp': (schedules.VPSchedule(), 0.01, 0.8),
    'rectified_flow': (schedules.RectifiedFlowSchedule(), 0.05, 0.95),
    'trigflow': (schedules.TrigFlowSchedule(sigma_data=0.5), 0.05, 1.5),
}
PREDICTIONS = ('x0', 'eps', 'score', 'velocity')


@functools.lru_cache(maxsize=None)
def _mixture():
  return GaussianMixture(
      weights=[0.5, 0.3, 0.2],
      means=[[-1.0, 0.5], [1.5, -0.5], [0.0, 1.5]],
      covs=[[[0.2, 0.05], [0.05, 0.1]], [[0.05, 0.0], [0.0, 0.3]], [[0.1, -0.03], [-0.03, 0.1]]])


def _times(name, num, seed=0):
  _, lo, hi = SCHEDULES[name]
  return jax.random.uniform(jax.random.key(seed), (num,), minval=lo, maxval=hi)


def _noisy(schedule, t, num, seed=1):
  """x_t = alpha x0 + sigma eps from the mixture, with its x0 and eps."""
  k0, k1 = jax.random.split(jax.random.key(seed))
  x0 = _mixture().sample(k0, num)
  eps = jax.random.normal(k1, x0.shape)
  x_t = schedule.alpha(t)[:, None] * x0 + schedule.sigma(t)[:, None] * eps
  return x_t, x0, eps


def _ve_denoiser(x, sigma, labels=None):
  del labels
  return _mixture().denoise(x, sigma)


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_derivatives_match_autodiff(name):
  schedule = SCHEDULES[name][0]
  t = _times(name, 32)
  for value, derivative in ((schedule.alpha, schedule.d_alpha), (schedule.sigma, schedule.d_sigma)):
    np.testing.assert_allclose(derivative(t), jax.vmap(jax.grad(value))(t), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_edm_sigma_is_noise_to_signal_ratio_and_inverts(name):
  schedule = SCHEDULES[name][0]
  t = _times(name, 32)
  s = schedule.edm_sigma(t)
  np.testing.assert_allclose(s, schedule.sigma(t) / schedule.alpha(t), rtol=1e-5)
  np.testing.assert_allclose(schedule.time_from_edm_sigma(s), t, rtol=1e-5, atol=1e-6)


def test_closed_forms_of_the_time_maps():
  t = jnp.array([0.1, 0.5, 0.9])
  np.testing.assert_allclose(schedules.RectifiedFlowSchedule().edm_sigma(t), t / (1 - t), rtol=1e-6)
  trig = schedules.TrigFlowSchedule(sigma_data=0.5)
  np.testing.assert_allclose(trig.edm_sigma(t), 0.5 * np.tan(t), rtol=1e-6)
  vp = schedules.VPSchedule()
  np.testing.assert_allclose(vp.alpha(t)**2 + vp.sigma(t)**2, 1.0, rtol=1e-6)
  # EDM's VPPrecond: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), sigma(1) ~ 152.
  np.testing.assert_allclose(vp.edm_sigma(1.0), math.sqrt(math.exp(0.5 * 19.9 + 0.1) - 1),
                             rtol=1e-5)


def test_get_schedule_builds_by_name_and_lists_choices():
  assert schedules.get_schedule('trigflow', sigma_data=1.0) == schedules.TrigFlowSchedule(1.0)
  with pytest.raises(ValueError, match=r"unknown schedule 'edm'.*'rectified_flow'"):
    schedules.get_schedule('edm')


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_targets_of_a_known_noising(name):
  """eps, score = -eps / sigma and velocity = alpha' x0 + sigma' eps from the true (x0, eps)."""
  schedule = SCHEDULES[name][0]
  t = _times(name, 32)
  x_t, x0, eps = _noisy(schedule, t, 32)

  def convert(prediction):
    return param.from_x0(schedule=schedule, prediction=prediction, x_t=x_t, t=t, x0=x0)

  np.testing.assert_allclose(convert('eps'), eps, atol=2e-4)
  np.testing.assert_allclose(convert('score'), -eps / schedule.sigma(t)[:, None], rtol=1e-3,
                             atol=2e-3)
  velocity = schedule.d_alpha(t)[:, None] * x0 + schedule.d_sigma(t)[:, None] * eps
  np.testing.assert_allclose(convert('velocity'), velocity, atol=5e-4)


def test_named_velocity_forms():
  t = jnp.linspace(0.1, 0.9, 32)
  rf = schedules.RectifiedFlowSchedule()
  x_t, x0, eps = _noisy(rf, t, 32)
  v = param.from_x0(schedule=rf, prediction='velocity', x_t=x_t, t=t, x0=x0)
  np.testing.assert_allclose(v, eps - x0, atol=1e-5)
  trig = schedules.TrigFlowSchedule(sigma_data=0.5)
  x_t, x0, eps = _noisy(trig, t, 32)
  v = param.from_x0(schedule=trig, prediction='velocity', x_t=x_t, t=t, x0=x0)
  expected = jnp.cos(t)[:, None] * 0.5 * eps - jnp.sin(t)[:, None] * x0
  np.testing.assert_allclose(v, expected, atol=1e-5)


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_round_trip_through_every_prediction(name):
  schedule = SCHEDULES[name][0]
  t = _times(name, 32)
  x_t, x0, _ = _noisy(schedule, t, 32)
  x0_hat = x0 + 0.1  # any estimate, not only the truth, must survive the round trip
  for prediction in PREDICTIONS:
    value = param.from_x0(schedule=schedule, prediction=prediction, x_t=x_t, t=t, x0=x0_hat)
    back = param.to_x0(schedule=schedule, prediction=prediction, x_t=x_t, t=t, value=value)
    np.testing.assert_allclose(back, x0_hat, atol=2e-4, err_msg=prediction)


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_one_ve_denoiser_is_exact_in_every_schedule(name):
  """D(x_t / alpha, sigma / alpha) is the exact E[x0 | x_t], and its score is the exact score."""
  schedule = SCHEDULES[name][0]
  gm = _mixture()
  t = _times(name, 32)
  x_t, _, _ = _noisy(schedule, t, 32)
  alpha, sigma = schedule.alpha(t), schedule.sigma(t)
  x0 = param.predictor_from_denoiser(_ve_denoiser, schedule=schedule)(x_t, t)
  np.testing.assert_allclose(x0, gm.denoise(x_t, sigma, alpha=alpha), atol=2e-4)
  score = param.predictor_from_denoiser(_ve_denoiser, schedule=schedule, prediction='score')(x_t, t)
  np.testing.assert_allclose(score, gm.score(x_t, sigma, alpha=alpha), rtol=1e-3, atol=2e-3)
  # The marginals themselves agree: p_t(x_t) = p^VE_{sigma/alpha}(x_t / alpha) / alpha^D.
  log_p_ve = gm.log_prob(x_t / alpha[:, None], schedule.edm_sigma(t)) - gm.dim * jnp.log(alpha)
  np.testing.assert_allclose(gm.log_prob(x_t, sigma, alpha=alpha), log_p_ve, atol=2e-4)


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_velocity_is_the_pf_ode_drift_of_the_ve_ode(name):
  """x_t = alpha(t) x(s(t)) with dx/ds = (x - D) / s gives v = alpha' x + alpha (x - D) / s * s'."""
  schedule = SCHEDULES[name][0]
  t = _times(name, 32)
  x_t, _, _ = _noisy(schedule, t, 32)
  alpha = schedule.alpha(t)[:, None]
  s, ds_dt = jax.jvp(schedule.edm_sigma, (t,), (jnp.ones_like(t),))
  x_ve = x_t / alpha
  drift = (schedule.d_alpha(t)[:, None] * x_ve +
           alpha * (x_ve - _ve_denoiser(x_ve, s)) / s[:, None] * ds_dt[:, None])
  v = param.predictor_from_denoiser(_ve_denoiser, schedule=schedule, prediction='velocity')(x_t, t)
  np.testing.assert_allclose(v, drift, rtol=2e-4, atol=5e-4)


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_denoiser_from_predictor_inverts_predictor_from_denoiser(name):
  schedule = SCHEDULES[name][0]
  x = _mixture().sample(jax.random.key(3), 32) + jax.random.normal(jax.random.key(4), (32, 2))
  sigma = schedule.edm_sigma(_times(name, 32))
  expected = _ve_denoiser(x, sigma)
  for prediction in PREDICTIONS:
    predictor = param.predictor_from_denoiser(_ve_denoiser, schedule=schedule,
                                              prediction=prediction)
    denoiser = param.denoiser_from_predictor(predictor, schedule=schedule, prediction=prediction)
    np.testing.assert_allclose(denoiser(x, sigma), expected, atol=3e-4, err_msg=prediction)
  # Jitted, with one scalar noise level for the whole batch.
  np.testing.assert_allclose(jax.jit(denoiser)(x, sigma[5]), _ve_denoiser(x, sigma[5]), atol=3e-4)


def test_unknown_prediction_lists_choices():
  with pytest.raises(ValueError, match=r"unknown prediction 'v'.*'velocity'"):
    param.predictor_from_denoiser(_ve_denoiser, schedule=schedules.VESchedule(), prediction='v')
  with pytest.raises(ValueError, match=r"unknown prediction 'noise'.*'eps'"):
    param.to_x0(schedule=schedules.VESchedule(), prediction='noise', x_t=jnp.ones((1, 2)), t=1.0,
                value=jnp.ones((1, 2)))
