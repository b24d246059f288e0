"""Mode assignment, coverage, off-mode rate and exact NLL against known mixtures."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.eval import mixture_metrics as mm


def _ring(num_modes=8, radius=4.0, std=0.2):
  ang = 2 * np.pi * np.arange(num_modes) / num_modes
  return GaussianMixture.isotropic(means=radius * np.stack([np.cos(ang), np.sin(ang)], 1), std=std)


def test_exact_samples_cover_every_mode_with_the_right_masses():
  gm = _ring()
  x = gm.sample(jax.random.key(0), 8000)
  assert float(mm.mode_coverage(x, gm)) == 1.0
  np.testing.assert_allclose(mm.per_mode_mass(x, gm), gm.weights, atol=0.02)
  assert float(mm.off_mode_fraction(x, gm)) < 2e-3
  report = mm.mixture_report(x, gm)
  assert report['mode_coverage'] == 1.0 and report['mode_mass_tv'] < 0.05


def test_collapse_on_one_mode_covers_one_eighth():
  gm = _ring()
  x = gm.means[3] + 0.2 * jax.random.normal(jax.random.key(1), (2000, 2))
  assert float(mm.mode_coverage(x, gm)) == pytest.approx(1 / 8)
  mass = np.asarray(mm.per_mode_mass(x, gm))
  assert mass[3] > 0.99 and mass.sum() - mass[3] == 0.0
  assert mm.mixture_report(x, gm)['mode_mass_tv'] == pytest.approx(7 / 8, abs=0.01)


def test_assignment_follows_weights_and_off_mode_points_get_minus_one():
  # Between two 1-D modes the heavier one wins the midpoint; far points belong to no mode.
  gm = GaussianMixture.isotropic(weights=[0.9, 0.1], means=[[-1.0], [1.0]], std=1.0)
  x = jnp.array([[0.0], [-1.0], [1.2], [5.5], [-30.0]])
  np.testing.assert_array_equal(mm.assign_modes(x, gm), [0, 0, 1, -1, -1])
  # The off-mode radius is 4 std in 1-D: 1.0 + 3.9 is on, 1.0 + 4.1 is off.
  np.testing.assert_array_equal(mm.assign_modes(jnp.array([[4.9], [5.1]]), gm), [1, -1])


def test_off_mode_radius_holds_the_1d_mass_in_any_dimension():
  assert mm.off_mode_radius(1, 4.0) == pytest.approx(4.0)
  r = mm.off_mode_radius(2, 4.0)  # chi2_2 tail is exp(-r^2 / 2)
  assert math.exp(-r**2 / 2) == pytest.approx(1 - special.erf(4 / math.sqrt(2)), rel=1e-6)
  assert mm.off_mode_radius(10, 4.0) > r


def test_min_share_threshold():
  gm = GaussianMixture.isotropic(weights=[0.5, 0.5], means=[[-5.0], [5.0]], std=0.5)
  x = jnp.concatenate([jnp.full((95, 1), -5.0), jnp.full((5, 1), 5.0)])
  assert float(mm.mode_coverage(x, gm)) == 1.0  # 5% >= 1%
  assert float(mm.mode_coverage(x, gm, min_share=0.1)) == 0.5


def test_nll_of_exact_samples_is_the_mixture_entropy():
  w, mu, sd = np.array([0.3, 0.7]), np.array([-1.0, 1.5]), np.array([0.6, 1.0])
  gm = GaussianMixture.isotropic(weights=w, means=mu[:, None], std=sd)

  def neg_p_log_p(t):
    p = np.sum(w * stats.norm.pdf(t, mu, sd))
    return -p * np.log(p)

  entropy, _ = integrate.quad(neg_p_log_p, -12, 14, limit=200)
  x = gm.sample(jax.random.key(2), 200_000)
  se = float(jnp.std(gm.log_prob(x))) / math.sqrt(x.shape[0])
  assert abs(float(mm.nll(x, gm)) - entropy) < 4 * se


def test_jittable_with_the_mixture_closed_over():
  gm = _ring()
  x = gm.sample(jax.random.key(3), 1000)
  np.testing.assert_allclose(jax.jit(lambda s: mm.nll(s, gm))(x), mm.nll(x, gm), rtol=1e-6)
  assert float(jax.jit(lambda s: mm.mode_coverage(s, gm))(x)) == 1.0


def test_bad_inputs_raise_clear_errors():
  gm = _ring()
  with pytest.raises(ValueError, match=r'shape \[N, 2\]'):
    mm.nll(jnp.zeros((5, 3)), gm)
  with pytest.raises(ValueError, match=r'shape \[N, 2\]'):
    mm.mode_coverage(jnp.zeros(5), gm)
  with pytest.raises(ValueError, match='min_share'):
    mm.mode_coverage(jnp.zeros((5, 2)), gm, min_share=0.0)
  with pytest.raises(ValueError, match='off_mode_std'):
    mm.assign_modes(jnp.zeros((5, 2)), gm, off_mode_std=-1.0)
