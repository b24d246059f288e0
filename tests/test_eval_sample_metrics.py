"""Sliced W2, MMD^2 and the energy distance on cases with known answers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from onestep_jax.eval import sample_metrics as sm


def _normal(seed, n, d, shift=0.0, scale=1.0):
  return scale * jax.random.normal(jax.random.key(seed), (n, d)) + shift


def test_sw2_1d_unequal_sizes_is_exact_empirical_w2():
  rs = np.random.RandomState(0)
  x, y = rs.randn(7, 1), 2 * rs.randn(5, 1) + 1
  # Repeating every atom M (resp. N) times gives two equal-size samples of the same measures.
  ref = np.mean((np.sort(np.repeat(x[:, 0], 5)) - np.sort(np.repeat(y[:, 0], 7)))**2)
  got = sm.sliced_wasserstein(x, y, key=jax.random.key(0), num_projections=4)
  np.testing.assert_allclose(float(got)**2, ref, rtol=1e-5)


def test_sw2_of_1d_gaussians_matches_closed_form_w2():
  # W2(N(m1, s1^2), N(m2, s2^2))^2 = (m1 - m2)^2 + (s1 - s2)^2.
  x = _normal(0, 40_000, 1)
  y = _normal(1, 30_000, 1, shift=1.5, scale=2.0)
  got = sm.sliced_wasserstein(x, y, key=jax.random.key(2), num_projections=2)
  np.testing.assert_allclose(float(got), np.sqrt(1.5**2 + 1.0**2), rtol=0.02)


def test_sw2_of_shifted_isotropic_gaussians_matches_closed_form():
  # Projections of N(0, I) and N(delta, I) differ by theta.delta; E[(theta.delta)^2] = |delta|^2/D.
  d, delta = 3, jnp.array([2.0, -1.0, 0.5])
  x = _normal(0, 4000, d)
  y = _normal(1, 4000, d) + delta
  got = sm.sliced_wasserstein(x, y, key=jax.random.key(2), num_projections=2000)
  np.testing.assert_allclose(float(got), float(jnp.linalg.norm(delta)) / np.sqrt(d), rtol=0.05)


@pytest.mark.parametrize('metric', ['sw', 'mmd2', 'energy'])
def test_near_zero_for_same_law_and_growing_with_shift(metric):
  fn = {
      'sw': lambda a, b: sm.sliced_wasserstein(a, b, key=jax.random.key(9)),
      'mmd2': sm.mmd2,
      'energy': sm.energy_distance,
  }[metric]
  x = _normal(0, 800, 2)
  y = _normal(1, 800, 2)
  values = [float(fn(x, y + s)) for s in (0.0, 0.5, 1.0, 2.0)]
  assert abs(values[0]) < (0.2 if metric == 'sw' else 0.1) * values[1]
  assert values[0] < values[1] < values[2] < values[3]
  if metric == 'sw':
    assert values[0] < 0.1  # finite-sample floor of SW2 at N = 800


def test_mmd2_matches_brute_force_unbiased_estimator():
  rs = np.random.RandomState(3)
  x, y = rs.randn(6, 2), rs.randn(4, 2) + 0.7
  hs = (0.5, 2.0)

  def k(a, b):
    d2 = ((a[:, None] - b[None])**2).sum(-1)
    return sum(np.exp(-d2 / (2 * h**2)) for h in hs)

  kxx, kyy = k(x, x), k(y, y)
  ref = ((kxx.sum() - np.trace(kxx)) / 30 + (kyy.sum() - np.trace(kyy)) / 12 - 2 * k(x, y).mean())
  np.testing.assert_allclose(float(sm.mmd2(x, y, bandwidths=hs)), ref, rtol=1e-5, atol=1e-6)
  # The default bandwidths are median_scales times the pooled median distance.
  med = float(sm.median_distance(x, y))
  z = np.concatenate([x, y])
  pooled = np.sqrt(((z[:, None] - z[None])**2).sum(-1))[np.triu_indices(10, 1)]
  np.testing.assert_allclose(med, np.median(pooled), rtol=1e-5)
  np.testing.assert_allclose(sm.mmd2(x, y, median_scales=(1.0, 2.0)),
                             sm.mmd2(x, y, bandwidths=(med, 2 * med)), rtol=1e-5)


def test_blockwise_sums_match_float64_brute_force_over_several_blocks(monkeypatch):
  # More rows than BLOCK_ROWS, not a multiple of it, and N != M, then N == M (whose terms are
  # combined row by row). Small blocks keep the test fast; the sizes are new to the jit caches.
  monkeypatch.setattr(sm, 'BLOCK_ROWS', 64)
  monkeypatch.setattr(sm, 'MEDIAN_SAMPLES', 100)
  rs = np.random.RandomState(7)
  hs = (0.3, 1.0)
  for n, m in ((2 * 64 + 37, 64 + 5), (64 + 30,) * 2):
    x, y = rs.randn(n, 2), 1.1 * rs.randn(m, 2) + 0.1
    d = lambda a, b: np.sqrt(((a[:, None] - b[None])**2).sum(-1))
    dxx, dyy, dxy = d(x, x), d(y, y), d(x, y)
    u = lambda k, size: (k.sum() - np.trace(k)) / (size * (size - 1))
    k = lambda dist: sum(np.exp(-dist**2 / (2 * h**2)) for h in hs)
    mmd = u(k(dxx), n) + u(k(dyy), m) - 2 * k(dxy).mean()
    energy = 2 * dxy.mean() - u(dxx, n) - u(dyy, m)
    np.testing.assert_allclose(float(sm.mmd2(x, y, bandwidths=hs)), mmd, rtol=1e-3, atol=2e-6)
    np.testing.assert_allclose(float(sm.energy_distance(x, y)), energy, rtol=1e-3, atol=2e-6)
  # The default bandwidths come from the first MEDIAN_SAMPLES points of each sample.
  x, y = rs.randn(157, 2), rs.randn(131, 2) + 3.0
  np.testing.assert_allclose(sm.median_distance(x, y), sm.median_distance(x[:100], y[:100]))


@jax.jit
def _median_by_sort(x, y):
  """median_distance as numpy's median of the pooled distances (a sort) gives it."""
  dxx, dyy, dxy = sm._centred_sq_dists(x, y)
  iu_x, iu_y = jnp.triu_indices(len(x), k=1), jnp.triu_indices(len(y), k=1)
  return jnp.sqrt(jnp.median(jnp.concatenate([dxx[iu_x], dyy[iu_y], dxy.ravel()])))


@pytest.mark.parametrize('n, m', [(7, 5), (8, 8), (60, 41), (300, 200)])
def test_the_pooled_median_is_the_sorted_one_to_the_bit(n, m):
  # Odd and even pooled counts, ties (values on a grid, one value everywhere), and -0.0.
  rs = np.random.RandomState(n)
  sq = lambda a: np.asarray(a, np.float32)
  for grid in (None, 3, 1):
    draw = (lambda shape: rs.rand(*shape)) if grid is None else (
        lambda shape: rs.randint(0, grid, shape).astype(np.float32))
    dxx, dyy, dxy = sq(draw((n, n))), sq(draw((m, m))), sq(draw((n, m)))
    dxy[0, :3] = -0.0
    pooled = np.concatenate([dxx[np.triu_indices(n, 1)], dyy[np.triu_indices(m, 1)],
                             dxy.ravel()])
    s = np.sort(pooled)
    low, high = s[(len(s) - 1) // 2], s[len(s) // 2]
    want = np.sqrt((low + high) * np.float32(0.5))
    got = jax.jit(sm._median_pooled)(dxx, dyy, dxy)
    np.testing.assert_array_equal(got, want)
  dxx[1, 2] = np.nan
  assert bool(jnp.isnan(sm._median_pooled(dxx, dyy, dxy)))


def test_median_distance_and_its_gradient_are_the_sorted_median_s():
  x, y = _normal(0, 30, 2), _normal(1, 25, 2, shift=0.3)
  np.testing.assert_allclose(sm.median_distance(x, y), _median_by_sort(x, y), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(sm.median_distance)(x, y),
                             jax.grad(_median_by_sort)(x, y), rtol=1e-5, atol=1e-7)
  assert bool(jnp.isnan(sm.median_distance(x.at[3, 1].set(jnp.nan), y)))


def test_rows_sorted_as_integer_keys_are_jnp_sort_s_values_and_derivative():
  rs = np.random.RandomState(3)
  v = rs.randn(16, 301).astype(np.float32)
  v[0, :6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, -np.nan]
  v[1, :40] = 1.5  # ties
  v[2] *= 1e-40  # subnormals, which XLA:CPU's float sort takes for zeros: numpy's order
  got = jax.jit(sm._sort_rows)(v)
  np.testing.assert_array_equal(got[:2], jnp.sort(v[:2], axis=-1))
  np.testing.assert_array_equal(got[3:], jnp.sort(v[3:], axis=-1))
  np.testing.assert_array_equal(got[2], np.sort(v[2]))
  w = jnp.asarray(np.delete(v, 2, axis=0))
  weights = jnp.asarray(rs.randn(*w.shape), jnp.float32)
  grad = lambda sort: jax.grad(lambda a: jnp.sum(sort(a) * weights))(w)  # noqa: E731
  np.testing.assert_array_equal(grad(sm._sort_rows), grad(lambda a: jnp.sort(a, axis=-1)))


def test_mmd2_and_energy_are_unbiased_for_the_same_law():
  keys = jax.random.split(jax.random.key(4), 40)
  draw = jax.vmap(lambda k: jax.random.normal(k, (2, 60, 2)))(keys)
  for fn in (lambda a, b: sm.mmd2(a, b, bandwidths=(1.0,)), sm.energy_distance):
    vals = np.asarray(jax.vmap(fn)(draw[:, 0], draw[:, 1]))
    se = vals.std() / np.sqrt(len(vals))
    assert abs(vals.mean()) < 3.5 * se


def test_energy_distance_matches_scipy_v_statistic():
  rs = np.random.RandomState(5)
  x, y = rs.randn(50, 1), 1.3 * rs.randn(70, 1) + 0.4
  n, m = 50, 70
  dxx = np.abs(x - x.T)
  dyy = np.abs(y - y.T)
  u_xx, u_yy = dxx.sum() / (n * (n - 1)), dyy.sum() / (m * (m - 1))
  e = float(sm.energy_distance(x, y))
  # scipy uses V-statistics: E|X-X'| estimated by sum / n^2 = U * (n - 1) / n.
  v = e + u_xx + u_yy - (n - 1) / n * u_xx - (m - 1) / m * u_yy
  np.testing.assert_allclose(np.sqrt(v), stats.energy_distance(x[:, 0], y[:, 0]), rtol=1e-4)


def test_jittable_with_finite_gradients_at_duplicate_points():
  x = jnp.concatenate([_normal(0, 50, 2), jnp.zeros((2, 2))])
  y = _normal(1, 40, 2)
  for fn in (sm.mmd2, sm.energy_distance,
             lambda a, b: sm.sliced_wasserstein(a, b, key=jax.random.key(0))):
    value, g = jax.jit(jax.value_and_grad(fn))(x, y)
    np.testing.assert_allclose(value, fn(x, y), rtol=1e-5, atol=1e-5)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
  # Identical sets: SW2 = 0, where a plain sqrt would have an infinite gradient.
  g = jax.grad(lambda a: sm.sliced_wasserstein(a, y, key=jax.random.key(0)))(y)
  assert bool(jnp.all(g == 0))


def test_float32_by_default_and_translation_invariant_far_from_origin():
  x, y = _normal(0, 300, 2), _normal(1, 300, 2, shift=0.5)
  far = 1e4
  for fn in (sm.mmd2, sm.energy_distance):
    assert fn(x, y).dtype == jnp.float32
    np.testing.assert_allclose(fn(x + far, y + far), fn(x, y), rtol=1e-2, atol=1e-4)


def test_bad_shapes_raise_clear_errors():
  x = jnp.zeros((10, 2))
  with pytest.raises(ValueError, match='same dimension'):
    sm.mmd2(x, jnp.zeros((10, 3)))
  with pytest.raises(ValueError, match=r'x must have shape \[num_samples, dim\]'):
    sm.energy_distance(jnp.zeros(10), x)
  with pytest.raises(ValueError, match='at least 2 samples'):
    sm.energy_distance(x, jnp.zeros((1, 2)))
  with pytest.raises(ValueError, match='num_projections'):
    sm.sliced_wasserstein(x, x, key=jax.random.key(0), num_projections=0)
  with pytest.raises(ValueError, match='bandwidths must be non-empty'):
    sm.mmd2(x, x, bandwidths=())
  with pytest.raises(ValueError, match='median_scales must be non-empty'):
    sm.mmd2(x, x, median_scales=())
