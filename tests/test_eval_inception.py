"""Tests of the FID Inception-v3 port against pytorch-fid reference outputs.

The fixture holds pytorch-fid 0.3.0 pool3 features computed with synthetic weights that
tests/fixtures/README.md ("FID Inception-v3") tells how to regenerate.
"""
import importlib.util
import json
import pathlib
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.eval import inception

_FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'inception_fid_synthetic.npz'


def synthetic_state_dict(shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
  """The README recipe: per-name RandomState seeded by crc32(name), float32."""
  state_dict = {}
  for name, shape in shapes.items():
    s = tuple(shape)
    rs = np.random.RandomState(zlib.crc32(name.encode()) & 0x7FFFFFFF)
    if name.endswith('num_batches_tracked'):
      value = np.zeros(s)
    elif name.endswith('running_var'):
      value = 0.5 + rs.random_sample(s)
    elif name.endswith('running_mean'):
      value = 0.02 * rs.standard_normal(s)
    elif '.bn.' in name and name.endswith('weight'):
      value = 1 + 0.1 * rs.standard_normal(s)
    elif name.endswith('bias'):
      value = 0.02 * rs.standard_normal(s)
    else:
      value = rs.standard_normal(s) * np.sqrt(2 / np.prod(s[1:]))
    state_dict[name] = value.astype(np.float32)
  return state_dict


def torch_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of PyTorch's bilinear resize, align_corners=False, no antialias.

  Source coordinate (i + 0.5)·n_in/n_out − 0.5, clamped below at 0; two taps, the second
  clamped to the last pixel. Computed in float64.
  """
  src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(int), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  matrix = np.zeros((n_out, n_in))
  np.add.at(matrix, (np.arange(n_out), lo), 1 - frac)
  np.add.at(matrix, (np.arange(n_out), hi), frac)
  return matrix


@pytest.fixture(scope='module')
def reference():
  with np.load(_FIXTURE) as archive:
    data = {k: archive[k] for k in archive.files}
  data['meta'] = json.loads(bytes(data.pop('meta_json')).decode())
  return data


@pytest.fixture(scope='module')
def state_dict(reference):
  return synthetic_state_dict(reference['meta']['state_dict_shapes'])


@pytest.fixture(scope='module')
def model(state_dict, tmp_path_factory):
  """Loaded through the public file path, in the fixtures' 'state_dict/' npz layout."""
  path = tmp_path_factory.mktemp('inception') / 'weights.npz'
  np.savez(path, meta_json=np.frombuffer(b'{}', np.uint8),
           **{f'state_dict/{k}': v for k, v in state_dict.items()})
  return inception.load_inception(path)


def nhwc(images_nchw: np.ndarray) -> np.ndarray:
  return images_nchw.transpose(0, 2, 3, 1)


def assert_matches(actual, expected):
  """Elementwise rtol 1e-4 (atol 1e-5 for the exact zeros of dead channels), normwise 1e-5."""
  actual = np.asarray(actual)
  assert actual.shape == expected.shape and actual.dtype == np.float32
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
  assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()


def test_regenerated_weights_match_fixture_sums(reference, state_dict):
  sums = reference['meta']['state_dict_sums']
  assert sorted(state_dict) == sorted(sums)
  got = [state_dict[k].astype(np.float64).sum() for k in sums]
  np.testing.assert_allclose(got, list(sums.values()), rtol=1e-9, atol=1e-9)


def test_pool3_matches_pytorch_fid(reference, model):
  images = nhwc(reference['inputs/images_299'])
  assert_matches(model(images), reference['outputs/pool3_299'])


def test_features_in_padded_batches_match_pytorch_fid(reference, model):
  # 3 images of 32×32 in batches of 2: the last batch is zero-padded.
  features = model.features(nhwc(reference['inputs/images_32']), batch_size=2,
                            progress=True)
  assert isinstance(features, np.ndarray)
  assert_matches(features, reference['outputs/pool3_32'])


def test_grayscale_is_repeated_to_rgb(reference, model):
  gray = nhwc(reference['inputs/images_32'])[:2, ..., :1]
  np.testing.assert_allclose(np.asarray(model(gray)),
                             model.features(np.repeat(gray, 3, axis=-1)),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('height,width', [(17, 40), (512, 300), (1, 299)])
def test_resize_is_pytorch_bilinear(height, width):
  images = np.random.default_rng(0).random((2, height, width, 3)).astype(np.float32)
  expected = np.einsum('oh,bhwc->bowc', torch_bilinear_matrix(height, 299), images)
  expected = np.einsum('pw,bowc->bopc', torch_bilinear_matrix(width, 299), expected)
  # float32 source coordinates near 512 carry ~3e-5 px of round-off (in PyTorch too).
  np.testing.assert_allclose(np.asarray(inception.preprocess(jnp.asarray(images))),
                             2 * expected - 1, rtol=0, atol=1e-4)


def test_state_dict_errors_name_the_entries(state_dict):
  partial = {k: v for k, v in state_dict.items() if k != 'Mixed_6b.branch7x7_2.conv.weight'}
  with pytest.raises(ValueError, match=r'missing 1 entries: Mixed_6b\.branch7x7_2\.conv\.weight'):
    inception.variables_from_state_dict(partial)
  with pytest.raises(ValueError, match=r'unexpected 1 entries: AuxLogits\.fc\.weight'):
    inception.variables_from_state_dict({**state_dict, 'AuxLogits.fc.weight': np.zeros(3)})
  bad = {**state_dict, 'Mixed_7c.branch_pool.bn.running_var': np.ones(191, np.float32)}
  with pytest.raises(ValueError, match=r'Mixed_7c\.branch_pool\.bn\.running_var has shape '
                     r'\(191,\), expected \(192,\)'):
    inception.variables_from_state_dict(bad)


def test_unused_entries_are_optional(state_dict):
  kept = {k: v for k, v in state_dict.items() if not k.startswith('fc.')
          and not k.endswith('num_batches_tracked')}
  variables = inception.variables_from_state_dict(kept)
  kernel = variables['params']['Mixed_6b']['branch7x7_2']['conv']['kernel']
  # PyTorch [out, in, 1, 7] → Flax [1, 7, in, out].
  np.testing.assert_array_equal(
      kernel, state_dict['Mixed_6b.branch7x7_2.conv.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['batch_stats']['Conv2d_1a_3x3']['bn']['var'],
                                state_dict['Conv2d_1a_3x3.bn.running_var'])


def test_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.npz'):
    inception.load_inception(tmp_path / 'nope.npz')
  weird = tmp_path / 'weights.h5'
  weird.write_bytes(b'')
  with pytest.raises(ValueError, match=r"'\.h5' is not one of \('\.npz', '\.pth', '\.pt'\)"):
    inception.load_inception(weird)
  plain = tmp_path / 'plain.npz'
  np.savez(plain, **{'fc.bias': np.ones(2, np.float32)})
  assert list(inception.read_state_dict(plain)) == ['fc.bias']
  with pytest.raises(ValueError, match=r'missing 470 entries: Conv2d_1a_3x3\.bn\.bias'):
    inception.load_inception(plain)


def test_pth_without_torch_says_how_to_convert(tmp_path):
  if importlib.util.find_spec('torch') is not None:
    pytest.skip('torch is installed: the .pth path would be taken')
  path = tmp_path / 'pt_inception.pth'
  path.write_bytes(b'')
  with pytest.raises(ImportError, match='needs torch'):
    inception.load_inception(path)


def test_image_errors(model):
  with pytest.raises(ValueError, match='looks like NCHW'):
    model(np.zeros((2, 3, 32, 32), np.float32))
  with pytest.raises(ValueError, match=r'C in \(1, 3\); got shape \(2, 8, 8, 4\)'):
    model(np.zeros((2, 8, 8, 4), np.float32))
  with pytest.raises(ValueError, match='dtype uint8'):
    model.features(np.zeros((2, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=r'\[0, 1\]; batch at 0 spans \[-1.0, 1.0\]'):
    model.features(np.linspace(-1, 1, 2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3))
  with pytest.raises(ValueError, match='batch_size must be positive; got 0'):
    model.features(np.zeros((2, 8, 8, 3), np.float32), batch_size=0)
  with pytest.raises(ValueError, match='empty'):
    model.features(np.zeros((0, 8, 8, 3), np.float32))
