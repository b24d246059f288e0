"""Data sources: deterministic process-sliced batches, epoch order, toys, files, registry."""
import gzip
import os

import numpy as np
import pytest
from PIL import Image

from onestep_jax.data import available, get_dataset
from onestep_jax.data.arrays import ArrayDataset, load_arrays
from onestep_jax.data.base import epoch_permutation, global_indices, process_rows
from onestep_jax.data.digits import load_digits_dataset
from onestep_jax.data.fashion_mnist import DEBIAN_DIR, load_fashion_mnist, read_idx
from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.data.image_folder import ImageFolderDataset
from onestep_jax.data.synthetic import MixtureDataset
from onestep_jax.data.toy2d import TOYS


def check_batches(ds, *, batch_size=8, steps=(0, 3)):
  """Shapes/dtypes, determinism, and 2-process slices concatenating to the 1-process batch."""
  batches = []
  for step in steps:
    full = ds.get_batch(step, batch_size, seed=5)
    assert set(full) == ({'x', 'label'} if ds.num_classes else {'x'})
    assert full['x'].dtype == np.float32
    assert full['x'].shape == (batch_size, *ds.example_shape)
    if ds.num_classes:
      assert full['label'].dtype == np.int32 and full['label'].shape == (batch_size,)
      assert full['label'].min() >= 0 and full['label'].max() < ds.num_classes
    again = ds.get_batch(step, batch_size, seed=5)
    parts = [ds.get_batch(step, batch_size, seed=5, process_index=i, process_count=2)
             for i in range(2)]
    for key in full:
      np.testing.assert_array_equal(again[key], full[key])
      assert parts[0][key].shape[0] == batch_size // 2
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
    batches.append(full['x'])
    np.testing.assert_array_equal(ds.batch_fn(batch_size, seed=5)(step, 1, 2)['x'], parts[1]['x'])
  assert not np.array_equal(batches[0], batches[1])
  assert not np.array_equal(ds.get_batch(steps[0], batch_size, seed=6)['x'], batches[0])
  return batches


# ---------------------------------------------------------------- batch order


def test_process_rows_partition_and_errors():
  assert [process_rows(12, process_index=i, process_count=3) for i in range(3)] == [
      slice(0, 4), slice(4, 8), slice(8, 12)]
  with pytest.raises(ValueError, match='batch_size 10 is not divisible by process_count 4'):
    process_rows(10, process_index=0, process_count=4)
  with pytest.raises(ValueError, match='process_index 2 is out of range for process_count 2'):
    process_rows(8, process_index=2, process_count=2)
  ds = get_dataset('ring8')
  with pytest.raises(ValueError, match='not divisible by process_count 3'):
    ds.get_batch(0, 8, seed=0, process_index=0, process_count=3)
  with pytest.raises(ValueError, match='seed must be a non-negative integer'):
    ds.get_batch(0, 8, seed=-1)
  with pytest.raises(ValueError, match='step must be a non-negative integer'):
    ds.get_batch(-2, 8, seed=0)


def test_epochs_cover_every_example_once_and_wrap():
  n, b = 10, 4
  ds = ArrayDataset(np.arange(n, dtype=np.float32)[:, None], labels=np.arange(n) % 3)
  seen = np.concatenate([ds.get_batch(s, b, seed=1)['x'][:, 0] for s in range(5)])  # 2 epochs
  for epoch in range(2):
    order = seen[epoch * n:(epoch + 1) * n]
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    np.testing.assert_array_equal(order, epoch_permutation(1, epoch, n))
  assert not np.array_equal(seen[:n], seen[n:])  # a fresh order every epoch
  # Step 2 straddles the epoch boundary: positions 8, 9 of epoch 0 then 0, 1 of epoch 1.
  np.testing.assert_array_equal(ds.get_batch(2, b, seed=1)['x'][:, 0], seen[8:12])
  np.testing.assert_array_equal(ds.get_batch(2, b, seed=1)['label'], seen[8:12].astype(int) % 3)
  big = global_indices(0, 3 * 1000, seed=7, num_examples=1000)
  for epoch in range(3):
    assert len(set(big[epoch * 1000:(epoch + 1) * 1000])) == 1000
  check_batches(ds, batch_size=4)


def test_finite_sample_is_distinct_subset_and_checks_size():
  ds = ArrayDataset(np.arange(20, dtype=np.float32)[:, None])
  ref = ds.sample(7, seed=3)[:, 0]
  assert len(set(ref)) == 7 and set(ref) <= set(range(20))
  np.testing.assert_array_equal(ds.sample(7, seed=3)[:, 0], ref)
  np.testing.assert_array_equal(np.sort(ds.sample(20, seed=0)[:, 0]), np.arange(20))
  with pytest.raises(ValueError, match='cannot draw 21 distinct reference examples'):
    ds.sample(21, seed=0)


# ---------------------------------------------------------------- toys

# Per-coordinate stds documented in toy2d.py (default arguments).
_DOCUMENTED_STD = {
    'ring8': (0.71, 0.71), 'grid25': (0.71, 0.71), 'two_modes_imbalanced': (0.67, 0.30),
    'checkerboard': (0.87, 0.87), 'moons': (0.87, 0.50), 'swiss_roll': (0.83, 0.87),
    'spiral': (0.75, 0.75),
}


@pytest.mark.parametrize('name', sorted(TOYS))
def test_toy_batches_and_documented_scale(name):
  ds = get_dataset(name)
  assert ds.example_shape == (2,) and ds.num_classes == 0 and ds.num_examples is None
  check_batches(ds)
  ref = ds.sample(20000, seed=0)
  assert ref.dtype == np.float32 and ref.shape == (20000, 2)
  np.testing.assert_array_equal(ds.sample(20000, seed=0), ref)
  assert not np.array_equal(ref[:8], ds.get_batch(0, 8, seed=0)['x'])
  np.testing.assert_allclose(ref.std(0), _DOCUMENTED_STD[name], atol=0.03)


@pytest.mark.parametrize('name', ['ring8', 'grid25', 'two_modes_imbalanced'])
def test_mixture_toys_sample_their_mixture(name):
  ds = get_dataset(name)
  gm = ds.mixture
  n = 40000
  x = np.concatenate([ds.get_batch(s, 8000, seed=2)['x'] for s in range(n // 8000)])
  se = np.sqrt(np.diag(gm.covariance()) / n)
  np.testing.assert_allclose(x.mean(0), gm.mean(), atol=5 * se.max())
  np.testing.assert_allclose(np.cov(x.T), gm.covariance(), atol=0.02)
  # Components are well separated: the most responsible one recovers the mixing weights.
  counts = np.bincount(np.argmax(gm.responsibilities(x), -1), minlength=gm.num_components)
  np.testing.assert_allclose(counts / n, gm.weights, atol=5 * np.sqrt(gm.weights.max() / n))


def test_imbalanced_weights_and_geometry():
  gm = get_dataset('two_modes_imbalanced', minor_weight=0.2, separation=3.0).mixture
  np.testing.assert_allclose(gm.weights, [0.8, 0.2])
  np.testing.assert_allclose(gm.means, [[-1.5, 0], [1.5, 0]])
  np.testing.assert_allclose(get_dataset('ring8', radius=2.0).mixture.means[2], [0, 2], atol=1e-6)
  assert get_dataset('grid25').mixture.num_components == 25
  with pytest.raises(ValueError, match='minor_weight must lie in'):
    get_dataset('two_modes_imbalanced', minor_weight=1.5)
  with pytest.raises(ValueError, match='separation must be positive'):
    get_dataset('two_modes_imbalanced', separation=0.0)
  with pytest.raises(ValueError, match='std must be positive'):
    get_dataset('two_modes_imbalanced', std=-0.3)


def test_labelled_ring_labels_each_mode_by_its_class():
  """ring8 with num_classes=2: labels are the component index mod 2, the same points as the
  component draw, and class_mixture(c) is exactly class c's modes at equal weights."""
  data = get_dataset('ring8', num_classes=2)
  assert data.num_classes == 2
  batch = data.get_batch(3, 4000, seed=0)
  assert batch['label'].dtype == np.int32 and batch['x'].shape == (4000, 2)
  angle = np.mod(np.arctan2(batch['x'][:, 1], batch['x'][:, 0]), 2 * np.pi)
  nearest = np.round(angle / (2 * np.pi / 8)).astype(int) % 8
  np.testing.assert_array_equal(batch['label'], nearest % 2)
  assert abs(batch['label'].mean() - 0.5) < 0.03
  rows = data.get_batch(3, 4000, seed=0, process_index=1, process_count=2)
  np.testing.assert_array_equal(rows['label'], batch['label'][2000:])
  odd = data.class_mixture(1)
  np.testing.assert_allclose(odd.means, data.mixture.means[1::2])
  np.testing.assert_allclose(odd.weights, 0.25)
  assert get_dataset('ring8').num_classes == 0 and 'label' not in get_dataset('ring8').get_batch(
      0, 4, seed=0)
  with pytest.raises(ValueError, match='num_classes must lie in'):
    get_dataset('ring8', num_classes=9)
  with pytest.raises(ValueError, match='no labels'):
    get_dataset('ring8').class_mixture(0)


def test_formula_toys_lie_on_their_curves():
  h = 1.5
  x = get_dataset('checkerboard', half_width=h).sample(5000, seed=0)
  cells = np.floor((x / h + 1) * 2).astype(int)
  assert np.all(np.abs(x) <= h) and np.all(cells.sum(1) % 2 == 0)
  x = get_dataset('moons', noise=0.0).sample(5000, seed=0)
  d_up = np.linalg.norm(x - [-0.5, -0.25], axis=1)
  d_low = np.linalg.norm(x - [0.5, 0.25], axis=1)
  assert np.all(np.minimum(np.abs(d_up - 1), np.abs(d_low - 1)) < 1e-5)
  scale = 0.125
  x = get_dataset('swiss_roll', scale=scale, noise=0.0).sample(5000, seed=0)
  t = np.linalg.norm(x, axis=1) / scale
  assert np.all((t > 1.5 * np.pi - 1e-4) & (t < 4.5 * np.pi + 1e-4))
  np.testing.assert_allclose(np.cos(t), x[:, 0] / (scale * t), atol=1e-4)
  radius, turns = 1.5, 1.5
  x = get_dataset('spiral', radius=radius, turns=turns, noise=0.0).sample(5000, seed=0)
  t = np.linalg.norm(x, axis=1) / radius * 2 * np.pi * turns
  on_arm = np.abs(np.sin(np.arctan2(x[:, 1], x[:, 0]) - t))  # phase is t or t + pi
  assert on_arm.max() < 1e-3


# ---------------------------------------------------------------- registry


def test_registry_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; valid names: .*'ring8'.*"
                                       r"'tfds:<name>'"):
    get_dataset('cifar')
  with pytest.raises(ValueError, match=r"'ring8'.*unexpected keyword argument 'radus'.*"
                                       r"accepted arguments: \['radius', 'std', 'num_classes'\]"):
    get_dataset('ring8', radus=2)
  with pytest.raises(ValueError, match="missing a required argument: 'path'"):
    get_dataset('arrays')
  assert set(TOYS) | {'arrays', 'image_folder', 'digits', 'fashion_mnist'} <= set(available())


# ---------------------------------------------------------------- user arrays


def test_arrays_low_dimensional(tmp_path):
  x = np.random.RandomState(0).randn(50, 3) * [1, 5, 0.1] + [0, 2, -3]
  np.save(tmp_path / 'a.npy', x)
  ds = get_dataset('arrays', path=str(tmp_path / 'a.npy'), split='all')
  assert ds.example_shape == (3,) and ds.num_classes == 0 and ds.num_examples == 50
  np.testing.assert_allclose(np.sort(ds.sample(50, seed=0), 0), np.sort(x, 0).astype(np.float32))
  check_batches(ds)
  z = load_arrays(str(tmp_path / 'a.npy'), standardize=True).sample(40, seed=0)
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
  seq = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)  # [N, L, D] kept as is
  np.savez(tmp_path / 's.npz', data=seq)
  ds = load_arrays(str(tmp_path / 's.npz'), split='all')
  assert ds.example_shape == (3, 2)
  np.testing.assert_array_equal(np.sort(ds.sample(4, seed=0)[:, 0, 0]), [0, 6, 12, 18])


def test_arrays_images_and_labels(tmp_path):
  rs = np.random.RandomState(0)
  nhwc = rs.randint(0, 256, (6, 5, 7, 3)).astype(np.uint8)
  nhwc[0, 0, 0] = [0, 255, 0]
  labels = np.array([0, 1, 2, 3, 0, 1])
  np.savez(tmp_path / 'img.npz', x=nhwc, label=labels)
  ds = load_arrays(str(tmp_path / 'img.npz'), split='all')
  assert ds.example_shape == (5, 7, 3) and ds.num_classes == 4
  check_batches(ds, batch_size=4)
  b = ds.get_batch(0, 6, seed=0)
  order = _match_rows(b['x'], nhwc)
  np.testing.assert_array_equal(np.sort(order), np.arange(6))
  np.testing.assert_allclose(b['x'], nhwc[order] / 127.5 - 1, atol=1e-6)
  np.testing.assert_array_equal(b['label'], labels[order])
  assert b['x'].min() == -1.0 and b['x'].max() == 1.0
  # NCHW is recognised automatically when only axis 1 looks like channels.
  np.savez(tmp_path / 'nchw.npz', images=np.transpose(nhwc, (0, 3, 1, 2)), labels=labels)
  ds_t = load_arrays(str(tmp_path / 'nchw.npz'), split='all')
  assert ds_t.example_shape == (5, 7, 3)
  np.testing.assert_array_equal(ds_t.get_batch(0, 6, seed=0)['x'], b['x'])
  # An ambiguous shape follows the explicit layout.
  np.save(tmp_path / 'amb.npy', np.zeros((2, 3, 4, 3), np.uint8))
  assert load_arrays(str(tmp_path / 'amb.npy')).example_shape == (3, 4, 3)
  assert load_arrays(str(tmp_path / 'amb.npy'), layout='nchw').example_shape == (4, 3, 3)


def _match_rows(rows, images):
  """Index of each scaled row in the uint8 image stack."""
  flat = (images.reshape(len(images), -1) / 127.5 - 1).astype(np.float32)
  return np.array([np.flatnonzero(np.all(np.abs(flat - r.ravel()) < 1e-6, 1))[0] for r in rows])


def test_arrays_errors(tmp_path):
  missing = str(tmp_path / 'nope.npy')
  with pytest.raises(FileNotFoundError, match='nope.npy'):
    load_arrays(missing)
  np.save(tmp_path / 'flat.npy', np.zeros(5))
  with pytest.raises(ValueError, match=r'at least 2 dimensions, got shape \(5,\)'):
    load_arrays(str(tmp_path / 'flat.npy'))
  np.save(tmp_path / 'chan.npy', np.zeros((2, 5, 6, 7), np.uint8))
  with pytest.raises(ValueError, match='have 7 channels'):
    load_arrays(str(tmp_path / 'chan.npy'))
  np.save(tmp_path / 'float.npy', np.full((2, 4, 4, 3), 2.0, np.float32))
  with pytest.raises(ValueError, match=r'float images must lie in \[-1, 1\]'):
    load_arrays(str(tmp_path / 'float.npy'))
  np.savez(tmp_path / 'two.npz', a=np.zeros((2, 2)), b=np.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"name it \"x\" \(arrays present: \['a', 'b'\]\)"):
    load_arrays(str(tmp_path / 'two.npz'))
  np.savez(tmp_path / 'lab.npz', x=np.zeros((3, 2)), label=np.array([0, 1]))
  with pytest.raises(ValueError, match=r'labels must be integers of shape \(3,\)'):
    load_arrays(str(tmp_path / 'lab.npz'))
  with pytest.raises(ValueError, match="layout must be one of"):
    load_arrays(str(tmp_path / 'chan.npy'), layout='hwc')


# ---------------------------------------------------------------- image folders


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path)


def test_image_folder_classes_crop_and_values(tmp_path):
  _save(tmp_path / 'cat' / 'a.png', np.full((8, 12, 3), 10))
  _save(tmp_path / 'cat' / 'b.png', np.full((6, 6, 3), 20))
  _save(tmp_path / 'dog' / 'c.png', np.full((9, 9, 3), 30))
  stripes = np.zeros((4, 12, 3), np.uint8)
  stripes[:, 4:8] = 200  # only the centre third survives a centre crop
  _save(tmp_path / 'dog' / 'd.png', stripes)
  _save(tmp_path / 'dog' / 'e.jpg', np.full((4, 4, 3), 128))
  ds = get_dataset('image_folder', path=str(tmp_path), resolution=4)
  assert ds.class_names == ('cat', 'dog') and ds.num_classes == 2 and ds.num_examples == 5
  assert ds.example_shape == (4, 4, 3)
  check_batches(ds, batch_size=4)
  b = ds.get_batch(0, 5, seed=0)
  value_to_label = {10: 0, 20: 0, 30: 1, 200: 1, 128: 1}
  pixels = np.round((b['x'] + 1) * 127.5)
  for img, label in zip(pixels, b['label']):
    v = int(np.median(img))
    assert np.abs(img - v).max() <= 2  # constant images stay constant (JPEG: within 2 levels)
    assert value_to_label[min(value_to_label, key=lambda k: abs(k - v))] == label
  gray = ImageFolderDataset(str(tmp_path / 'dog'), resolution=2, channels=1)
  assert gray.num_classes == 0 and gray.example_shape == (2, 2, 1)
  assert set(gray.get_batch(0, 3, seed=0)) == {'x'}


def test_image_folder_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='image folder not found: .*nowhere'):
    ImageFolderDataset(str(tmp_path / 'nowhere'), resolution=8)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='no .png/.jpg/.jpeg images found in .*empty'):
    ImageFolderDataset(str(tmp_path / 'empty'), resolution=8)
  with pytest.raises(ValueError, match='channels must be 1 or 3, got 4'):
    ImageFolderDataset(str(tmp_path / 'empty'), resolution=8, channels=4)


# ---------------------------------------------------------------- digits


def test_digits_splits_and_scaling():
  train, test, full = (load_digits_dataset(split=s) for s in ('train', 'test', 'all'))
  assert (train.num_examples, test.num_examples, full.num_examples) == (1438, 359, 1797)
  assert train.example_shape == (8, 8, 1) and train.num_classes == 10
  check_batches(test)
  xs = [d.sample(d.num_examples, seed=0).reshape(d.num_examples, -1) for d in (train, test, full)]
  assert xs[2].min() == -1.0 and xs[2].max() == 1.0
  # Every pixel value is one of the 17 levels {0..16} mapped onto [-1, 1].
  np.testing.assert_allclose(xs[2] * 8 + 8, np.round(xs[2] * 8 + 8), atol=1e-5)
  both = np.concatenate(xs[:2])
  np.testing.assert_array_equal(both[np.lexsort(both.T)], xs[2][np.lexsort(xs[2].T)])
  with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\)"):
    load_digits_dataset(split='val')


@pytest.mark.parametrize('file_found', [True, False])
def test_digits_are_scikit_learn_s_whether_read_from_its_file_or_through_it(monkeypatch,
                                                                           file_found):
  from sklearn import datasets as sk_datasets
  from onestep_jax.data import digits
  assert digits._bundled_csv() is not None  # the installed scikit-learn ships the file
  if not file_found:
    monkeypatch.setattr(digits, '_bundled_csv', lambda: None)
  reference = sk_datasets.load_digits()
  pixels, labels = digits._pixels_and_labels()
  np.testing.assert_array_equal(pixels, reference.images)
  np.testing.assert_array_equal(labels, reference.target)


# ---------------------------------------------------------------- Fashion-MNIST IDX


def _write_idx(path, array, code, *, compress):
  header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, '>u4').tobytes()
  payload = header + array.astype(array.dtype.newbyteorder('>')).tobytes()
  with (gzip.open if compress else open)(path, 'wb') as f:
    f.write(payload)


def test_read_idx_round_trip(tmp_path):
  cases = [(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
           (np.arange(-3, 3, dtype=np.int16), 0x0B),
           (np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2), 0x0D)]
  for i, (array, code) in enumerate(cases):
    for compress in (False, True):
      path = tmp_path / f'{i}{compress}.idx'
      _write_idx(path, array, code, compress=compress)
      out = read_idx(str(path))
      assert out.dtype == array.dtype
      np.testing.assert_array_equal(out, array)
  (tmp_path / 'bad').write_bytes(b'\x01\x02\x08\x01')
  with pytest.raises(ValueError, match='is not an IDX file'):
    read_idx(str(tmp_path / 'bad'))
  _write_idx(tmp_path / 'short', np.zeros((4, 4), np.uint8), 0x08, compress=False)
  (tmp_path / 'short').write_bytes((tmp_path / 'short').read_bytes()[:-3])
  with pytest.raises(ValueError, match=r'promises shape \(4, 4\)'):
    read_idx(str(tmp_path / 'short'))


def test_fashion_mnist_from_tiny_idx_dir(tmp_path):
  rs = np.random.RandomState(0)
  images = rs.randint(0, 256, (6, 28, 28)).astype(np.uint8)
  labels = np.array([3, 1, 4, 1, 5, 9], np.uint8)
  _write_idx(tmp_path / 't10k-images-idx3-ubyte', images, 0x08, compress=False)
  _write_idx(tmp_path / 't10k-labels-idx1-ubyte.gz', labels, 0x08, compress=True)
  ds = get_dataset('fashion_mnist', split='test', data_dir=str(tmp_path))
  assert ds.example_shape == (28, 28, 1) and ds.num_classes == 10 and ds.num_examples == 6
  check_batches(ds, batch_size=4)
  b = ds.get_batch(0, 6, seed=0)
  order = _match_rows(b['x'], images[..., None])
  np.testing.assert_array_equal(np.sort(order), np.arange(6))
  np.testing.assert_array_equal(b['label'], labels[order])
  with pytest.raises(FileNotFoundError,
                     match=f'train-images-idx3-ubyte.* not found in directory {tmp_path}.*'
                           'dataset-fashion-mnist'):
    load_fashion_mnist(split='train', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]"):
    load_fashion_mnist(split='t10k', data_dir=str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(DEBIAN_DIR),
                    reason='Debian package dataset-fashion-mnist is not installed')
def test_fashion_mnist_debian_files():
  test = load_fashion_mnist(split='test')
  assert test.num_examples == 10000 and test.example_shape == (28, 28, 1)
  b = test.get_batch(0, 10000, seed=0)
  np.testing.assert_array_equal(np.bincount(b['label']), [1000] * 10)  # balanced classes
  assert b['x'].min() == -1.0 and b['x'].max() == 1.0
  train = load_fashion_mnist()
  assert train.num_examples == 60000
  check_batches(train, batch_size=16)


def test_mixture_dataset_full_covariance():
  rs = np.random.RandomState(3)
  a = rs.randn(2, 3, 3)
  gm = GaussianMixture(weights=[0.3, 0.7], means=rs.randn(2, 3),
                       covs=a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(3))
  n = 40000
  x = MixtureDataset(gm).sample(n, seed=0)
  assert x.shape == (n, 3) and x.dtype == np.float32
  assert np.all(np.abs(x.mean(0) - gm.mean()) < 5 * np.sqrt(np.diag(gm.covariance()) / n))
  np.testing.assert_allclose(np.cov(x.T), gm.covariance(), rtol=0.05, atol=0.05)


# ---------------------------------------------------------------- TFDS (array_record, no TF)


@pytest.fixture(scope='module')
def tiny_tfds_dir(tmp_path_factory):
  """A prepared 13/5-example TFDS dataset: PNG `image`, uint8 Tensor `pixels`, ClassLabel."""
  tfds = pytest.importorskip('tensorflow_datasets')

  class OnestepTinyImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(4, 4, 3)),
          'pixels': tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
          'label': tfds.features.ClassLabel(num_classes=3),
      }))

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples(13), 'test': self._generate_examples(5)}

    def _generate_examples(self, num):
      for i in range(num):
        pixels = np.full((4, 4, 3), 10 * i, np.uint8)
        yield i, {'image': Image.fromarray(pixels), 'pixels': pixels, 'label': i % 3}

  data_dir = str(tmp_path_factory.mktemp('tfds'))
  OnestepTinyImages(data_dir=data_dir, file_format='array_record').download_and_prepare()
  return data_dir


def test_tfds_array_record_reader(tiny_tfds_dir):
  ds = get_dataset('tfds:onestep_tiny_images', split='train', data_dir=tiny_tfds_dir)
  assert ds.num_examples == 13 and ds.num_classes == 3 and ds.example_shape == (4, 4, 3)
  check_batches(ds, batch_size=4)
  # Two simulated hosts, each with its own reader, rebuild the single-host batch.
  hosts = [get_dataset('tfds:onestep_tiny_images', data_dir=tiny_tfds_dir) for _ in range(2)]
  for step in (0, 3, 7):  # 3 and 7 straddle epoch boundaries
    full = ds.get_batch(step, 6, seed=9)
    parts = [h.get_batch(step, 6, seed=9, process_index=i, process_count=2)
             for i, h in enumerate(hosts)]
    for key in ('x', 'label'):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
  # One epoch of batches shows every example once, with its own label.
  epoch = [ds.get_batch(s, 13, seed=4) for s in range(2)]
  for b in epoch:
    index = np.round((b['x'][:, 0, 0, 0] + 1) * 127.5 / 10).astype(int)
    np.testing.assert_array_equal(np.sort(index), np.arange(13))
    np.testing.assert_array_equal(b['label'], index % 3)
    assert np.all(b['x'] == b['x'][:, :1, :1, :1])  # constant images decode exactly
  assert not np.array_equal(epoch[0]['label'], epoch[1]['label']) or not np.array_equal(
      epoch[0]['x'], epoch[1]['x'])
  # The uint8 Tensor feature reads the same pixels as the PNG Image feature.
  raw = get_dataset('tfds:onestep_tiny_images', data_dir=tiny_tfds_dir, image_key='pixels')
  np.testing.assert_array_equal(raw.get_batch(1, 6, seed=0)['x'], ds.get_batch(1, 6, seed=0)['x'])
  small = get_dataset('tfds:onestep_tiny_images', split='test', data_dir=tiny_tfds_dir,
                      resolution=2, label_key=None)
  assert small.example_shape == (2, 2, 3) and small.num_classes == 0 and small.num_examples == 5
  ref = small.sample(5, seed=0)
  np.testing.assert_allclose(np.sort(ref[:, 0, 0, 0]), np.arange(5) * 10 / 127.5 - 1, atol=1e-6)


def test_tfds_errors(tiny_tfds_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="'onestep_tiny_images' is not prepared in "
                                              f'{tmp_path}.*never downloads'):
    get_dataset('tfds:onestep_tiny_images', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"no feature 'img'; features: \['image', 'label', "
                                       r"'pixels'\]"):
    get_dataset('tfds:onestep_tiny_images', data_dir=tiny_tfds_dir, image_key='img')
  with pytest.raises(ValueError, match="Unknown split 'validation'"):
    get_dataset('tfds:onestep_tiny_images', data_dir=tiny_tfds_dir, split='validation')
  with pytest.raises(ValueError, match="unexpected keyword argument 'splits'"):
    get_dataset('tfds:onestep_tiny_images', splits='train')
