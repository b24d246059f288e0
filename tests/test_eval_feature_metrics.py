"""FID, KID, precision/recall and streaming feature statistics on cases with known answers."""
import numpy as np
import pytest

from onestep_jax.eval import feature_metrics as fm


def _spd(rs, f):
  a = rs.randn(f, f)
  return a @ a.T / f + 0.1 * np.eye(f)


def test_frechet_distance_closed_form_for_commuting_covariances():
  # Diagonal covariances: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a) - sqrt(b))^2.
  a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  ref = 1.0 + 4.0 + np.sum((np.sqrt(a) - np.sqrt(b))**2)
  for method in fm.FID_METHODS:
    got = fm.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    assert got == pytest.approx(ref, rel=1e-10)


def test_sqrtm_and_eigh_agree_for_general_and_singular_covariances():
  rs = np.random.RandomState(0)
  s1, s2 = _spd(rs, 12), _spd(rs, 12)
  mu1, mu2 = rs.randn(12), rs.randn(12)
  values = [fm.frechet_distance(mu1, s1, mu2, s2, method=m) for m in fm.FID_METHODS]
  assert values[0] == pytest.approx(values[1], rel=1e-8)
  # Fewer samples than features: rank-deficient covariances, the pytorch-fid fallback case.
  x, y = rs.randn(8, 20), rs.randn(9, 20) + 0.3
  values = [fm.fid_from_features(x, y, method=m) for m in fm.FID_METHODS]
  assert np.isfinite(values).all()
  assert values[0] == pytest.approx(values[1], rel=1e-3)


def test_fid_of_gaussian_features_matches_the_frechet_distance_of_the_laws():
  rs = np.random.RandomState(1)
  f = 6
  s1, s2, mu1, mu2 = _spd(rs, f), _spd(rs, f), rs.randn(f), rs.randn(f)
  exact = fm.frechet_distance(mu1, s1, mu2, s2)
  x = rs.multivariate_normal(mu1, s1, 40_000)
  y = rs.multivariate_normal(mu2, s2, 40_000)
  assert fm.fid_from_features(x, y) == pytest.approx(exact, rel=0.02)
  same = fm.fid_from_features(x[:20_000], x[20_000:])
  assert 0 <= same < 0.01 * exact


def test_streaming_statistics_match_numpy_far_from_the_origin():
  rs = np.random.RandomState(2)
  x = rs.randn(1001, 5) * np.array([1.0, 2.0, 0.1, 3.0, 1.0]) + 1e6
  stats = fm.FeatureStatistics()
  for s in range(0, 1001, 128):
    stats.update(x[s:s + 128])
  assert stats.count == 1001
  np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-6, atol=1e-9)


def test_statistics_save_load_round_trip(tmp_path):
  rs = np.random.RandomState(3)
  stats = fm.FeatureStatistics().update(rs.randn(50, 4))
  path = str(tmp_path / 'ref_stats.npz')
  stats.save(path)
  mu, sigma = fm.load_statistics(path)
  np.testing.assert_array_equal(mu, stats.mean)
  np.testing.assert_array_equal(sigma, stats.covariance)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['ref_stats.npz']
  with pytest.raises(FileNotFoundError, match='missing.npz'):
    fm.load_statistics(str(tmp_path / 'missing.npz'))
  np.savez(tmp_path / 'bad.npz', mean=mu)
  with pytest.raises(ValueError, match=r"lacks keys \['mu', 'sigma'\]"):
    fm.load_statistics(str(tmp_path / 'bad.npz'))


def test_kid_is_unbiased_for_one_law_and_grows_with_the_shift():
  rs = np.random.RandomState(4)
  x = rs.randn(3000, 8)
  same = [fm.kid(x[:1500], x[1500:], num_subsets=20, subset_size=300, seed=s)[0]
          for s in range(3)]
  shifted = [fm.kid(x[:1500], x[1500:] + d, num_subsets=20, subset_size=300)[0]
             for d in (0.25, 0.5, 1.0)]
  assert abs(np.mean(same)) < 0.1 * shifted[0]
  assert shifted[0] < shifted[1] < shifted[2]
  mean, std = fm.kid(x[:1500], x[1500:] + 0.5, num_subsets=20, subset_size=300)
  assert mean == shifted[1] and std > 0


def test_kid_matches_a_direct_unbiased_mmd_when_one_subset_holds_everything():
  rs = np.random.RandomState(5)
  x, y = rs.randn(30, 4), rs.randn(30, 4) + 0.5
  k = lambda a, b: (a @ b.T / 4 + 1)**3
  kxx, kyy = k(x, x), k(y, y)
  ref = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (30 * 29) - 2 * k(x, y).mean()
  mean, std = fm.kid(x, y, num_subsets=3, subset_size=1000)
  assert mean == pytest.approx(ref, rel=1e-10) and std == pytest.approx(0, abs=1e-10)


def test_precision_recall_identical_disjoint_and_partial():
  rs = np.random.RandomState(6)
  x = rs.randn(400, 5)
  assert fm.precision_recall(x, x) == (1.0, 1.0)
  assert fm.precision_recall(x, x + 100.0) == (0.0, 0.0)
  # Half the fake samples are real points, half are far away: precision 1/2; the fake manifold
  # covers the real points it contains, so recall is at least 1/2.
  fake = np.concatenate([x[:200], x[200:] + 100.0])
  p, r = fm.precision_recall(x, fake, batch_size=64)
  assert p == 0.5 and r >= 0.5
  # A fake set concentrated on one real point has full precision and almost no recall.
  p, r = fm.precision_recall(x, np.repeat(x[:1], 50, 0) + 1e-3 * rs.randn(50, 5))
  assert p == 1.0 and r < 0.05


def test_bad_feature_inputs_raise_clear_errors():
  x = np.zeros((10, 3))
  with pytest.raises(ValueError, match='same width'):
    fm.fid_from_features(x, np.zeros((10, 4)))
  with pytest.raises(ValueError, match=r'real must have shape \[num_samples, num_features\]'):
    fm.kid(np.zeros(10), x)
  with pytest.raises(ValueError,
                     match=r"unknown FID method 'svd'; valid choices: \['sqrtm', 'eigh'\]"):
    fm.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), method='svd')
  with pytest.raises(ValueError, match=r'covariances must have shape \(3, 3\)'):
    fm.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match='at least 4 samples'):
    fm.precision_recall(x, x[:3], k=3)
  with pytest.raises(ValueError, match='non-finite'):
    fm.fid_from_features(np.full((4, 3), np.nan), x)
  stats = fm.FeatureStatistics().update(x)
  with pytest.raises(ValueError, match='width 4, earlier batches had 3'):
    stats.update(np.zeros((2, 4)))
  with pytest.raises(ValueError, match='no features were added'):
    _ = fm.FeatureStatistics().mean
