"""EDM checkpoint import/export: the official networks reproduced number for number (fixtures
from NVlabs/edm with random weights), round trips for other settings, VP/VE preconditioning, and
the error messages."""
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from onestep_jax.convert import edm
from onestep_jax.nets.dhariwal_unet import DhariwalUNet
from onestep_jax.nets.song_unet import SongUNet
from test_nets_edm import random_params

FIXTURES = ('edm_ddpmpp_tiny', 'edm_ncsnpp_tiny', 'edm_adm_tiny')


def rel_err(got, ref):
  """max |got - ref| / max |ref|: scale-free and robust to the near-zero entries of F."""
  return float(np.abs(np.asarray(got) - ref).max() / np.abs(ref).max())


def nhwc(a):
  return np.transpose(a, (0, 2, 3, 1))


def nchw(a):
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


@pytest.mark.parametrize('name', FIXTURES)
def test_fixture_outputs_are_reproduced(fixtures_dir, name):
  path = fixtures_dir / f'{name}.npz'
  teacher = edm.load(path)
  data = np.load(path)
  x, sigma = nhwc(data['inputs/x']), data['inputs/sigma']
  labels = data['inputs/class_labels'] if 'inputs/class_labels' in data else None
  augment = data['inputs/augment_labels'] if 'inputs/augment_labels' in data else None
  meta = json.loads(bytes(data['meta_json']).decode())['precond_kwargs']
  assert (teacher.label_dim, teacher.augment_dim) == (meta['label_dim'], meta['augment_dim'])
  assert (teacher.img_resolution, teacher.img_channels, teacher.sigma_data) == (8, 3, 0.5)
  assert teacher.model_type == meta['model_type']

  d = teacher.denoise(x, sigma, labels, augment)
  assert rel_err(nchw(d), data['outputs/D']) <= 1e-4
  c_in = 1 / np.sqrt(sigma**2 + 0.25)
  f = teacher.raw(x * c_in[:, None, None, None], np.log(sigma) / 4, labels, augment)
  assert rel_err(nchw(f), data['outputs/F_raw']) <= 1e-4
  if 'outputs/D_without_augment_labels' in data:
    d0 = teacher.denoise(x, sigma, labels)
    assert rel_err(nchw(d0), data['outputs/D_without_augment_labels']) <= 1e-4
  # The module rebuilt from network_kwargs is the same network.
  rebuilt = edm.MODEL_TYPES[teacher.model_type](**teacher.network_kwargs)
  aug = None if augment is None else jnp.asarray(augment)
  np.testing.assert_array_equal(
      rebuilt.apply({'params': teacher.params}, jnp.asarray(x), jnp.asarray(sigma),
                    None if labels is None else jnp.asarray(labels), aug),
      teacher.module.apply({'params': teacher.params}, jnp.asarray(x), jnp.asarray(sigma),
                           None if labels is None else jnp.asarray(labels), aug))
  # Export gives back the official state_dict, buffers included, bit for bit.
  exported = edm.to_state_dict(teacher)
  official = {k[len('state_dict/'):]: data[k] for k in data.files if k.startswith('state_dict/')}
  assert exported.keys() == official.keys()
  for key, value in official.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_scalar_sigma_and_missing_labels(fixtures_dir):
  teacher = edm.load(fixtures_dir / 'edm_adm_tiny.npz')
  data = np.load(fixtures_dir / 'edm_adm_tiny.npz')
  x = nhwc(data['inputs/x'])
  np.testing.assert_array_equal(teacher.denoise(x, 0.5), teacher.denoise(x, np.full(4, 0.5)))
  # No labels means all-zero labels, as EDMPrecond does.
  np.testing.assert_array_equal(teacher.denoise(x, 0.5), teacher.denoise(x, 0.5, np.zeros((4, 10))))


# Batch 4 and 16 base channels as in the fixtures, so that most eager kernels are reused.
ROUND_TRIPS = {
    'song_skip_skip': (SongUNet, dict(
        encoder_type='skip', decoder_type='skip', channel_mult=(1, 2, 2), attn_resolutions=(8, 2),
        resample_filter=(1, 3, 3, 1), label_dim=3, model_channels=16, num_blocks=1, dropout=0.0)),
    'ncsnpp_conditional': (SongUNet, dict(
        embedding_type='fourier', encoder_type='residual', channel_mult_noise=2,
        resample_filter=(1, 3, 3, 1), channel_mult=(1, 2), attn_resolutions=(4,), label_dim=10,
        augment_dim=9, model_channels=16, num_blocks=1, label_dropout=0.1)),
    'adm_augment_attention': (DhariwalUNet, dict(
        model_channels=16, channel_mult=(1, 4), attn_resolutions=(4,), num_blocks=1,
        augment_dim=9, dropout=0.0)),
}


@pytest.mark.parametrize('name', sorted(ROUND_TRIPS))
def test_save_load_round_trip(tmp_path, name):
  cls, kwargs = ROUND_TRIPS[name]
  module = cls(img_resolution=8, in_channels=3, out_channels=3, **kwargs)
  rs = np.random.RandomState(1)
  x = jnp.asarray(rs.standard_normal((4, 8, 8, 3)), jnp.float32)
  noise = jnp.asarray(rs.standard_normal(4), jnp.float32)
  labels = augment = None
  if module.label_dim:
    labels = jnp.eye(module.label_dim)[rs.randint(0, module.label_dim, 4)]
  if module.augment_dim:
    augment = jnp.asarray(rs.standard_normal((4, module.augment_dim)), jnp.float32)
  params = random_params(module, x, noise, labels, augment)

  edm.save_npz(tmp_path / 'net.npz', (module, params), precond_kwargs={'sigma_data': 0.7})
  teacher = edm.load(tmp_path / 'net.npz')
  assert teacher.network_kwargs == edm._network_kwargs(module)
  assert teacher.sigma_data == 0.7 and teacher.precond_class == 'EDMPrecond'
  for path, value in traverse_util.flatten_dict(params).items():
    np.testing.assert_array_equal(traverse_util.flatten_dict(teacher.params)[path], value)
  np.testing.assert_array_equal(
      teacher.raw(x, noise, labels, augment),
      module.apply({'params': params}, x, noise, labels, augment))
  if name == 'adm_augment_attention':  # 64 channels at 4x4: one attention head
    assert 'qkv' in teacher.params['dec_4x4_in0']
  state_dict = edm.to_state_dict(teacher)
  if name == 'song_skip_skip':  # resample-only layers exist only as PyTorch buffers
    np.testing.assert_allclose(state_dict['model.enc.2x2_aux_down.resample_filter'][0, 0],
                               np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64)
    assert 'model.dec.4x4_aux_up.resample_filter' in state_dict
  # Saving the loaded teacher again writes the same archive content.
  edm.save_npz(tmp_path / 'again.npz', teacher)
  first, second = np.load(tmp_path / 'net.npz'), np.load(tmp_path / 'again.npz')
  assert sorted(first.files) == sorted(second.files)
  for key in first.files:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.fixture(scope='module')
def song_and_params():
  module = SongUNet(img_resolution=8, in_channels=3, out_channels=3, model_channels=16,
                    channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)
  return module, random_params(module, jnp.zeros((4, 8, 8, 3)), jnp.zeros(4))


def test_vp_and_ve_preconditioning(tmp_path, song_and_params):
  x = jnp.asarray(np.random.RandomState(2).standard_normal((4, 8, 8, 3)), jnp.float32)
  sigma = np.array([0.05, 0.5, 3.0, 20.0], np.float32)
  col = lambda v: np.asarray(v, np.float32)[:, None, None, None]

  edm.save_npz(tmp_path / 'vp.npz', song_and_params, precond_class='VPPrecond')
  vp = edm.load(tmp_path / 'vp.npz')
  beta_d, beta_min = 19.9, 0.1
  vp_sigma = lambda t: np.sqrt(np.exp(0.5 * beta_d * t**2 + beta_min * t) - 1)
  # c_noise = (M - 1) t with sigma(t) = sigma: solve the quadratic in t.
  sigma64 = sigma.astype(np.float64)
  t = (np.sqrt(beta_min**2 + 2 * beta_d * np.log1p(sigma64**2)) - beta_min) / beta_d
  np.testing.assert_allclose(vp_sigma(t), sigma, rtol=1e-6)
  # float32 like EDM: sqrt(.) - beta_min cancels at small sigma, hence rtol 1e-4.
  np.testing.assert_allclose(vp.coefficients(sigma).c_noise, 999 * t, rtol=1e-4)
  want = x + col(-sigma) * vp.raw(x * col(1 / np.sqrt(sigma**2 + 1)), 999 * t)
  # c_noise reaches ~300, where float32 rounding moves the embedding by ~1e-5.
  assert rel_err(vp.denoise(x, sigma), want) <= 1e-4
  np.testing.assert_allclose([vp.sigma_min, vp.sigma_max], [vp_sigma(1e-5), vp_sigma(1.0)])

  edm.save_npz(tmp_path / 've.npz', song_and_params, precond_class='VEPrecond',
               precond_kwargs={'sigma_max': 80.0})
  ve = edm.load(tmp_path / 've.npz')
  want = x + col(sigma) * ve.raw(x, np.log(sigma / 2))
  assert rel_err(ve.denoise(x, sigma), want) <= 1e-5
  assert (ve.sigma_min, ve.sigma_max) == (0.02, 80.0)


# -- errors -----------------------------------------------------------------------------------


def _variant(tmp_path, fixtures_dir, *, drop=(), extra=None, meta=None, name='variant.npz'):
  """A copy of the ADM fixture with keys dropped / replaced / added and meta edited."""
  data = dict(np.load(fixtures_dir / 'edm_adm_tiny.npz'))
  for key in drop:
    del data[key]
  data.update(extra or {})
  if meta is not None:
    data['meta_json'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  np.savez(tmp_path / name, **data)
  return tmp_path / name


@pytest.fixture
def adm_meta(fixtures_dir):
  return json.loads(bytes(np.load(fixtures_dir / 'edm_adm_tiny.npz')['meta_json']).decode())


def test_load_reports_missing_and_misnamed_files(tmp_path, fixtures_dir):
  with pytest.raises(FileNotFoundError, match='nothere.npz'):
    edm.load(tmp_path / 'nothere.npz')
  (tmp_path / 'net.pt').write_bytes(b'x')
  with pytest.raises(ValueError, match=r"suffix '.pt'.*valid: \['.npz', '.pkl'\]"):
    edm.load(tmp_path / 'net.pt')
  with pytest.raises(ValueError, match='no meta_json'):
    edm.load(_variant(tmp_path, fixtures_dir, drop=['meta_json']))


def test_load_names_missing_unexpected_and_mismatched_keys(tmp_path, fixtures_dir):
  with pytest.raises(ValueError, match=r'missing 1 key\(s\): model.out_conv.bias'):
    edm.load(_variant(tmp_path, fixtures_dir, drop=['state_dict/model.out_conv.bias']))
  with pytest.raises(ValueError, match=r'1 unexpected key\(s\): model.extra.weight'):
    edm.load(_variant(tmp_path, fixtures_dir, extra={'state_dict/model.extra.weight': np.ones(2)}))
  bad = {'state_dict/model.out_conv.weight': np.ones((3, 16, 1, 1), np.float32)}
  with pytest.raises(ValueError, match=r'model.out_conv.weight: the settings need \(3, 16, 3, 3\), '
                                       r'the state_dict has \(3, 16, 1, 1\)'):
    edm.load(_variant(tmp_path, fixtures_dir, extra=bad))
  bad = {'state_dict/model.enc.4x4_down.conv0.resample_filter': np.ones((1, 1, 2, 2), np.float32)}
  with pytest.raises(ValueError, match=r'4x4_down.conv0.resample_filter does not match '
                                       r'resample_filter=\[1, 1\]'):
    edm.load(_variant(tmp_path, fixtures_dir, extra=bad))


def test_load_rejects_unknown_settings(tmp_path, fixtures_dir, adm_meta):
  def meta_with(**changes):
    return {**adm_meta, 'precond_kwargs': {**adm_meta['precond_kwargs'], **changes}}

  with pytest.raises(ValueError, match=r"precond_class 'iDDPMPrecond'; valid: "
                                       r"\['EDMPrecond', 'VEPrecond', 'VPPrecond'\]"):
    edm.load(_variant(tmp_path, fixtures_dir,
                      meta={**adm_meta, 'precond_class': 'iDDPMPrecond'}))
  with pytest.raises(ValueError,
                     match=r"model_type 'UNet2D'; valid: \['DhariwalUNet', 'SongUNet'\]"):
    edm.load(_variant(tmp_path, fixtures_dir, meta=meta_with(model_type='UNet2D')))
  with pytest.raises(ValueError, match=r"unknown DhariwalUNet option\(s\) \['encoder_type'\]; "
                                       r"valid: \['attn_resolutions'"):
    edm.load(_variant(tmp_path, fixtures_dir, meta=meta_with(encoder_type='skip')))
  with pytest.raises(ValueError, match=r"lacks \['precond_kwargs'\]"):
    edm.load(_variant(tmp_path, fixtures_dir, meta={'precond_class': 'EDMPrecond'}))
  kwargs = dict(adm_meta['precond_kwargs'])
  del kwargs['img_channels']
  with pytest.raises(ValueError, match=r"lacks required option\(s\) \['img_channels'\]"):
    edm.load(_variant(tmp_path, fixtures_dir, meta={**adm_meta, 'precond_kwargs': kwargs}))


def test_pickles_need_torch_and_the_edm_source(tmp_path, monkeypatch):
  (tmp_path / 'net.pkl').write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'torch', None)  # import torch -> ImportError
  with pytest.raises(ImportError, match='run pkl_to_npz where they are installed'):
    edm.load(tmp_path / 'net.pkl')
  with pytest.raises(FileNotFoundError, match='missing.pkl'):
    edm.pkl_to_npz(tmp_path / 'missing.pkl', tmp_path / 'out.npz')


def test_save_npz_is_all_or_nothing(tmp_path, song_and_params):
  module, params = song_and_params
  target = tmp_path / 'net.npz'
  target.write_bytes(b'previous content')
  broken = traverse_util.flatten_dict(params)
  del broken[('dec_8x8_aux_conv', 'bias')]
  with pytest.raises(ValueError, match=r'missing 1 key\(s\): model.dec.8x8_aux_conv.bias'):
    edm.save_npz(target, (module, traverse_util.unflatten_dict(broken)))
  assert target.read_bytes() == b'previous content'
  assert [p.name for p in tmp_path.iterdir()] == ['net.npz']  # no temporary left behind
  wrong = jax.tree_util.tree_map(lambda a: a, params)
  wrong['map_layer0'] = {**wrong['map_layer0'], 'bias': jnp.zeros(3)}
  with pytest.raises(ValueError, match=r'map_layer0/bias: the settings need \(64,\), '
                                       r'the params have \(3,\)'):
    edm.to_state_dict((module, wrong))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    edm.save_npz(tmp_path / 'no' / 'net.npz', song_and_params)
  with pytest.raises(ValueError, match='in_channels == out_channels'):
    edm.save_npz(target, (module.clone(out_channels=6), params))


def test_save_npz_of_a_teacher_takes_no_precond_settings(tmp_path, fixtures_dir):
  teacher = edm.load(fixtures_dir / 'edm_adm_tiny.npz')
  with pytest.raises(ValueError, match='EDMTeacher carries its own'):
    edm.save_npz(tmp_path / 'x.npz', teacher, precond_kwargs={'sigma_data': 1.0})
  assert not math.isfinite(teacher.sigma_max) and teacher.sigma_min == 0
