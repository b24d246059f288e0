"""benchmarks/ayf_theorem31.py: the closed forms against samples, and the shape of Theorem 3.1."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.diffusion import flow_maps
from onestep_jax.eval import feature_metrics, sample_metrics
from train_helpers.scripts import load_script

thm = load_script('benchmarks/ayf_theorem31.py')

C = 0.5


@pytest.mark.parametrize('gamma,delta', [(0.0, 0.2), (0.5, 0.2), (1.0, 0.2), (1.0, 0.0)])
def test_closed_form_std_is_the_samplers(gamma, delta):
  """The scalar recursion gives the std of `flow_maps.sample` run on 200k samples with the
  imperfect map (jumps, gamma-time and re-noising all as the library does them)."""
  n = 200_000
  x1 = jax.random.normal(jax.random.PRNGKey(0), (n, 1))
  x0 = flow_maps.sample(thm.imperfect_average_velocity(C, delta), x1,
                        times=flow_maps.time_grid(4), gamma=gamma, key=jax.random.PRNGKey(1))
  expected = thm.sampled_std(4, c=C, delta=delta, gamma=gamma)
  np.testing.assert_allclose(float(jnp.std(x0)), expected, rtol=0.01)
  np.testing.assert_allclose(float(jnp.mean(x0)), 0.0, atol=0.01)
  if delta == 0.0:  # the exact map is exact for every sampler
    np.testing.assert_allclose(expected, C, rtol=1e-5)


def test_gaussian_w2_against_samples_and_frechet():
  """1-D W2 between Gaussians: the closed form equals the Frechet distance's square root and the
  exact empirical W2 (quantile coupling) of 100k samples of each."""
  m1, s1, m2, s2 = 0.3, 0.5, -0.1, 0.8
  w2 = thm.gaussian_w2(m1, s1, m2, s2)
  np.testing.assert_allclose(w2, math.sqrt(feature_metrics.frechet_distance(
      [m1], [[s1**2]], [m2], [[s2**2]])), rtol=1e-6)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(2), 3)
  x = m1 + s1 * jax.random.normal(k1, (100_000, 1))
  y = m2 + s2 * jax.random.normal(k2, (100_000, 1))
  np.testing.assert_allclose(float(sample_metrics.sliced_wasserstein(x, y, key=k3)), w2,
                             rtol=0.02)


@pytest.mark.parametrize('num_steps', [1, 3, 16])
def test_deterministic_flow_map_compounds_to_a_bounded_error(num_steps):
  """gamma = 0: the std ratios telescope, a_N = c (1 + delta / N)^N, which rises to c e^delta."""
  delta = 0.2
  np.testing.assert_allclose(thm.sampled_std(num_steps, c=C, delta=delta, gamma=0.0),
                             C * (1 + delta / num_steps)**num_steps, rtol=1e-5)


def test_theorem_shape():
  """c = 0.5: the consistency model (gamma = 1) is best at two or three steps and then gets
  worse with every step, past its one-step error by 32 steps; the flow map's W2 rises with the
  steps but never past c (e^delta - 1), (e^delta - 1) / delta times its one-step W2."""
  for delta in (0.05, 0.1, 0.2):
    cm = [thm.w2_to_data(n, c=C, delta=delta, gamma=1.0) for n in thm.STEPS]
    fm = [thm.w2_to_data(n, c=C, delta=delta, gamma=0.0) for n in thm.STEPS]
    assert thm.STEPS[int(np.argmin(cm))] in (2, 3)
    assert np.all(np.diff(cm[2:]) > 0)
    assert cm[thm.STEPS.index(32)] > cm[0]
    assert np.all(np.diff(fm) >= 0) and fm[-1] <= C * math.expm1(delta)
