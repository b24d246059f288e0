"""The offline feature extractor: accuracy on digits, FID separation, determinism, save/load."""
import jax
import numpy as np
import pytest

from onestep_jax.data.digits import load_digits_dataset
from onestep_jax.eval import classifier, feature_metrics

STEPS = 200


def _all(split):
  ds = load_digits_dataset(split=split)
  batch = ds.get_batch(0, ds.num_examples, seed=0)
  return batch['x'], batch['label']


@pytest.fixture(scope='module')
def digits():
  return _all('train'), _all('test')


@pytest.fixture(scope='module')
def extractor(digits):
  (x, y), _ = digits
  return classifier.train_classifier(x, y, num_classes=10, steps=STEPS, seed=0)


def test_digits_test_accuracy_above_0_9(extractor, digits):
  _, (x_test, y_test) = digits
  acc = extractor.accuracy(x_test, y_test)
  print(f'digits test accuracy after {STEPS} steps: {acc:.4f}')
  assert acc > 0.9


def test_fid_separates_digits_from_noise_and_shuffled_pixels(extractor, digits):
  _, (x_test, _) = digits
  rs = np.random.RandomState(0)
  h = len(x_test) // 2
  noise = rs.uniform(-1, 1, x_test.shape).astype(np.float32)
  flat = x_test.reshape(len(x_test), -1)
  shuffled = np.stack([row[rs.permutation(flat.shape[1])] for row in flat]).reshape(x_test.shape)
  feats = extractor.features(x_test)
  assert feats.shape == (len(x_test), 128) and feats.dtype == np.float32
  fid = lambda other: feature_metrics.fid_from_features(feats[:h], other, method='eigh')
  same = fid(feats[h:])
  assert 5 * same < fid(extractor.features(shuffled[h:]))
  assert 5 * same < fid(extractor.features(noise[h:]))


def test_training_is_deterministic_given_the_seed(extractor, digits):
  (x, y), _ = digits
  again = classifier.train_classifier(x, y, num_classes=10, steps=STEPS, seed=0)
  jax.tree.map(np.testing.assert_array_equal, again.params, extractor.params)
  other = classifier.train_classifier(x, y, num_classes=10, steps=STEPS, seed=1)
  assert not np.array_equal(other.features(x[:8]), extractor.features(x[:8]))


def test_save_load_round_trip(extractor, digits, tmp_path):
  _, (x_test, _) = digits
  extractor.save(str(tmp_path / 'clf'))
  loaded = classifier.FeatureExtractor.load(str(tmp_path / 'clf'))
  assert loaded.image_shape == (8, 8, 1) and loaded.net_kwargs == extractor.net_kwargs
  np.testing.assert_array_equal(loaded.features(x_test), extractor.features(x_test))
  np.testing.assert_array_equal(loaded.logits(x_test), extractor.logits(x_test))
  # Another batch size may get other XLA:CPU kernels: bitwise equal on an Intel Xeon, 1e-7 apart
  # on an AMD EPYC.
  np.testing.assert_allclose(loaded.logits(x_test, batch_size=50), extractor.logits(x_test),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(FileNotFoundError, match='missing'):
    classifier.FeatureExtractor.load(str(tmp_path / 'missing'))


def test_28x28_images_and_bad_inputs(extractor):
  rs = np.random.RandomState(1)
  x = rs.uniform(-1, 1, (16, 28, 28, 1)).astype(np.float32)
  small = classifier.train_classifier(x, np.arange(16) % 3, num_classes=3, steps=2, batch_size=4,
                                      widths=(4, 8, 8), feature_dim=16)
  assert small.features(x).shape == (16, 16) and small.logits(x).shape == (16, 3)
  with pytest.raises(ValueError, match=r'images must have shape \[N, 8, 8, 1\]'):
    extractor.features(x)
  with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\)'):
    classifier.train_classifier(x, np.arange(16), num_classes=3, steps=2)
  with pytest.raises(ValueError, match=r'labels must be integers of shape \(16,\)'):
    classifier.train_classifier(x, np.zeros(15, int), num_classes=3, steps=2)
  with pytest.raises(ValueError, match=r'labels must have shape \(16,\)'):
    small.accuracy(x, np.zeros(4, int))
