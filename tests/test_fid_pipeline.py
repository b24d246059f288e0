"""The conventions of the paper-comparable FID pipeline: EDM's uint8 quantisation, float64
statistics that merge exactly, reference files, FID and Inception Score against direct
NumPy/SciPy computations, and the Inception logits on the synthetic-weight fixture network."""
import json

import jax
import numpy as np
import pytest
from scipy import linalg, special

from onestep_jax.data.images import uint8_to_unit
from onestep_jax.eval import feature_metrics, fid_pipeline
from onestep_jax.eval.inception_score import InceptionScoreAccumulator, inception_score
from test_eval_inception import synthetic_state_dict


def _edm_uint8(x):
  """EDM generate.py in float32: (x * 127.5 + 128).clip(0, 255).to(torch.uint8)."""
  x = np.asarray(x, np.float32)
  return np.clip(x * np.float32(127.5) + np.float32(128), 0, 255).astype(np.uint8)


def test_quantisation_matches_edm_on_edge_values():
  levels = np.arange(256)
  boundaries = ((levels - 128) / np.float32(127.5)).astype(np.float32)  # x * 127.5 + 128 = k
  x = np.concatenate([
      [-np.inf, -3.0, -1.0039216, -1.0, 0.0, 0.99607843, 1.0, 1.0039216, 3.0, np.inf],
      boundaries, np.nextafter(boundaries, -2), np.nextafter(boundaries, 2),
      np.linspace(-1.01, 1.01, 200_001, dtype=np.float32)]).astype(np.float32)
  got = np.asarray(fid_pipeline.quantize_uint8(x))
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, _edm_uint8(x))
  # -1 -> 0.5 -> 0, 0 -> 128, 1 -> 255.5 -> 255, out of range clipped; truncation, not rounding:
  # 200.99 -> 200.
  np.testing.assert_array_equal(
      fid_pipeline.quantize_uint8(np.float32([-1, 0, 1, -7, 7, (200.99 - 128) / 127.5])),
      [0, 128, 255, 0, 255, 200])
  # The data's pixels (u / 127.5 - 1) come back as themselves.
  np.testing.assert_array_equal(fid_pipeline.quantize_uint8(uint8_to_unit(levels)), levels)


def test_statistics_merge_exactly_and_survive_their_state():
  rs = np.random.RandomState(0)
  x = rs.randn(1000, 5) * [1.0, 2.0, 0.1, 3.0, 1.0] + 1e3
  parts = [feature_metrics.FeatureStatistics(dim=5).update(c) for c in np.array_split(x, 7)]
  merged = feature_metrics.FeatureStatistics(dim=5)
  for p in parts[::-1]:
    merged.merge(feature_metrics.FeatureStatistics.from_state(p.state()))
  merged.merge(feature_metrics.FeatureStatistics(dim=5))  # an empty process
  assert merged.count == 1000
  np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-14)
  np.testing.assert_allclose(merged.covariance, np.cov(x, rowvar=False), rtol=1e-9)
  copy = feature_metrics.FeatureStatistics.from_state(merged.state())
  np.testing.assert_array_equal(copy.covariance, merged.covariance)
  with pytest.raises(ValueError, match='width 4, earlier batches had 5'):
    merged.merge(feature_metrics.FeatureStatistics(dim=4).update(x[:3, :4]))


def _accumulate(features, logits=None, *, keep=0, batch=64, seed=0):
  """A ScoreAccumulator fed in shuffled batches of rows."""
  n, f = features.shape
  logits = np.zeros((n, 3)) if logits is None else logits
  acc = fid_pipeline.ScoreAccumulator(num_samples=n, feature_dim=f, num_classes=logits.shape[1],
                                      keep=keep)
  order = np.random.RandomState(seed).permutation(n)
  for s in range(0, n, batch):
    idx = order[s:s + batch]
    acc.update(idx, features[idx], logits[idx])
  return acc


def _reference(features, tmp_path, keep=0):
  path = str(tmp_path / 'ref.npz')
  fid_pipeline.save_reference(path, _accumulate(features, keep=keep), source={'what': 'test'})
  return fid_pipeline.load_reference(path, feature_dim=features.shape[1])


def test_reference_file_round_trip_and_refusals(tmp_path):
  rs = np.random.RandomState(1)
  x = rs.randn(300, 8).astype(np.float32)
  ref = _reference(x, tmp_path, keep=50)
  np.testing.assert_allclose(ref.mu, x.mean(0), rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(ref.sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-9,
                             atol=1e-12)
  np.testing.assert_array_equal(ref.features, x[:50])
  assert json.loads(ref.source) == {'what': 'test'}
  with np.load(tmp_path / 'ref.npz') as data:
    assert int(data['count']) == 300 and data['mu'].dtype == np.float64
  # EDM's published layout: mu and sigma only.
  np.savez(tmp_path / 'edm.npz', mu=ref.mu, sigma=ref.sigma)
  edm = fid_pipeline.load_reference(str(tmp_path / 'edm.npz'), feature_dim=8)
  np.testing.assert_array_equal(edm.sigma, ref.sigma)
  assert edm.features is None and edm.source == ''

  def refused(match, **arrays):
    np.savez(tmp_path / 'bad.npz', **arrays)
    with pytest.raises(ValueError, match=match):
      fid_pipeline.load_reference(str(tmp_path / 'bad.npz'), feature_dim=8)

  refused(r"lacks keys \['sigma'\]", mu=ref.mu)
  refused(r'mu has shape \(2048,\), expected \[8\]', mu=np.zeros(2048), sigma=np.eye(2048))
  refused(r'sigma has shape \(8, 7\), expected \(8, 8\)', mu=ref.mu, sigma=ref.sigma[:, :7])
  refused('not symmetric', mu=ref.mu, sigma=ref.sigma + np.triu(np.ones((8, 8)), 1))
  refused('non-finite', mu=np.full(8, np.nan), sigma=ref.sigma)
  refused(r'features have shape \(5, 3\)', mu=ref.mu, sigma=ref.sigma, features=np.zeros((5, 3)))
  with pytest.raises(FileNotFoundError, match='missing.npz'):
    fid_pipeline.load_reference(str(tmp_path / 'missing.npz'), feature_dim=8)


def test_fid_of_a_set_against_itself_is_zero(tmp_path):
  x = np.random.RandomState(2).randn(500, 16) @ np.random.RandomState(3).randn(16, 16)
  scores = fid_pipeline.scores(_accumulate(x, keep=500, seed=4), _reference(x, tmp_path, 500))
  assert abs(scores['fid']) < 1e-8
  assert scores['precision'] == 1.0 and scores['recall'] == 1.0


def test_fid_matches_a_direct_scipy_computation_on_gaussian_features(tmp_path):
  rs = np.random.RandomState(5)
  f = 24
  real = rs.randn(3000, f) @ rs.randn(f, f) / 3 + rs.randn(f)
  fake = rs.randn(2500, f) @ rs.randn(f, f) / 3 + rs.randn(f)
  mu1, mu2 = real.mean(0), fake.mean(0)
  s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
  direct = (np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2)
            - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))
  got = fid_pipeline.scores(_accumulate(fake), _reference(real, tmp_path))['fid']
  assert got == pytest.approx(direct, rel=1e-9)


def _numpy_inception_score(logits, splits=10):
  """The original algorithm: consecutive splits, exp(mean KL(p(y|x) || p(y)))."""
  p = special.softmax(np.asarray(logits, np.float64), axis=1)
  n = len(p)
  scores = []
  for s in range(splits):
    part = p[s * n // splits:(s + 1) * n // splits]
    kl = np.sum(part * (np.log(part) - np.log(part.mean(0, keepdims=True))), axis=1)
    scores.append(np.exp(kl.mean()))
  return np.mean(scores), np.std(scores)


def test_inception_score_matches_numpy_on_given_logits():
  rs = np.random.RandomState(6)
  logits = 3.0 * rs.randn(1003, 12)  # 1003: splits of 100 and 101 samples
  expected = _numpy_inception_score(logits)
  assert inception_score(logits) == pytest.approx(expected, rel=1e-12)
  # Streamed in shuffled batches as two processes' halves, then merged: the same numbers.
  halves = []
  for rows in np.array_split(rs.permutation(1003), 2):
    acc = InceptionScoreAccumulator(num_samples=1003, num_classes=12)
    for chunk in np.array_split(rows, 5):
      acc.update(chunk, logits[chunk])
    halves.append(acc)
  assert halves[0].merge(halves[1]).result() == pytest.approx(expected, rel=1e-12)
  # Known values: equal predictions give 1; confident predictions spread over K classes give K.
  assert inception_score(np.zeros((50, 7)))[0] == pytest.approx(1.0, abs=1e-12)
  confident = 50.0 * np.eye(7)[np.arange(700) % 7]
  assert inception_score(confident) == pytest.approx((7.0, 0.0), abs=1e-12)
  with pytest.raises(ValueError, match='needs all 1003 samples'):
    InceptionScoreAccumulator(num_samples=1003, num_classes=12).update(
        np.arange(10), logits[:10]).result()


def test_inception_network_logits_and_refusals(tmp_path):
  with np.load('tests/fixtures/inception_fid_synthetic.npz') as archive:
    meta = json.loads(bytes(archive['meta_json']).decode())
    images = archive['inputs/images_32'].transpose(0, 2, 3, 1)
    pool3 = archive['outputs/pool3_32']
  state_dict = synthetic_state_dict(meta['state_dict_shapes'])
  path = tmp_path / 'weights.npz'
  np.savez(path, **state_dict)
  network = fid_pipeline.inception_network(path)
  assert (network.feature_dim, network.num_classes) == (2048, 1008)
  assert network.identity == f'inception:{fid_pipeline.file_digest(path)}'
  features, logits = jax.jit(fid_pipeline.inception_outputs)(network.variables, images)
  np.testing.assert_allclose(features, pool3, rtol=1e-4, atol=1e-5)
  # Unbiased logits: pool3 @ fc.weight^T, no fc.bias.
  expected = np.asarray(features, np.float64) @ state_dict['fc.weight'].T.astype(np.float64)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
  np.savez(path, **{k: v for k, v in state_dict.items() if k != 'fc.weight'})
  with pytest.raises(ValueError, match=r'needs fc.weight of shape \(1008, 2048\).*no fc.weight'):
    fid_pipeline.inception_network(path)
