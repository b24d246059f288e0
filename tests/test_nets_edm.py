"""EDM U-Net layers and networks: PyTorch operator semantics, init statistics, dropout paths.

Agreement with the official networks number for number is tested in test_convert_edm.py.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.nets import edm_layers
from onestep_jax.nets.dhariwal_unet import DhariwalUNet
from onestep_jax.nets.song_unet import SongUNet


# -- numpy references with PyTorch's definitions (NCHW, OIHW) ---------------------------------


def ref_conv2d(x, w, *, stride=1, pad=0, groups=1):
  """torch.nn.functional.conv2d: out[n,o,i,j] = sum x[n,c,s*i+a-pad,s*j+b-pad] w[o,c',a,b]."""
  n, c, h, wd = x.shape
  o, cg, k, _ = w.shape
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
  out = np.zeros((n, o, ho, wo))
  for oc in range(o):
    g = oc // (o // groups)
    for i in range(ho):
      for j in range(wo):
        patch = xp[:, g * cg:(g + 1) * cg, stride * i:stride * i + k, stride * j:stride * j + k]
        out[:, oc, i, j] = np.einsum('ncab,cab->n', patch, w[oc])
  return out


def ref_conv_transpose2d(x, w, *, stride=2, pad=0, groups=1):
  """torch conv_transpose2d: every input pixel scatters w into out[s*i+a-pad, s*j+b-pad]."""
  n, c, h, wd = x.shape
  _, og, k, _ = w.shape
  full = np.zeros((n, og * groups, (h - 1) * stride + k, (wd - 1) * stride + k))
  for ic in range(c):
    g = ic // (c // groups)
    for i in range(h):
      for j in range(wd):
        full[:, g * og:(g + 1) * og, stride * i:stride * i + k, stride * j:stride * j + k] += (
            x[:, ic, i, j][:, None, None, None] * w[ic][None])
  return full[:, :, pad:full.shape[2] - pad, pad:full.shape[3] - pad]


def random_params(module, *args, seed=0, scale=0.3):
  """N(0, scale^2) parameters of the shapes `module.init` would create (no costly jax init)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)['params']
  rs = np.random.RandomState(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(scale * rs.standard_normal(s.shape), jnp.float32), shapes)


def nhwc(a):
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)), jnp.float32)


def nchw(a):
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


@pytest.fixture(scope='module')
def x_img():
  return np.random.RandomState(0).standard_normal((2, 3, 6, 6)).astype(np.float32)


@pytest.mark.parametrize('size', [6, 7])
@pytest.mark.parametrize('filt', [(1, 1), (1, 3, 3, 1), (1, 2)])
def test_resampling_matches_pytorch_definitions(filt, size):
  """Also the box filter's 2x2-block mean and repetition (even sizes) and its general form (7)."""
  x_img = np.random.RandomState(size).standard_normal((2, 3, size, size)).astype(np.float32)
  f = edm_layers.resample_kernel(filt)
  np.testing.assert_allclose(f.sum(), 1.0, rtol=1e-6)
  k, c = f.shape[0], x_img.shape[1]
  pad = (k - 1) // 2
  depthwise = np.tile(f[None, None], (c, 1, 1, 1))
  down = edm_layers.downsample(nhwc(x_img), f, pad)
  np.testing.assert_allclose(nchw(down), ref_conv2d(x_img, depthwise, stride=2, pad=pad, groups=c),
                             rtol=1e-5, atol=1e-5)
  up = edm_layers.upsample(nhwc(x_img), f, pad)
  want = ref_conv_transpose2d(x_img, 4 * depthwise, pad=pad, groups=c)
  np.testing.assert_allclose(nchw(up), want, rtol=1e-5, atol=1e-5)


def test_box_filter_upsampling_repeats_each_pixel_exactly(x_img):
  x = nhwc(x_img)
  up = edm_layers.upsample(x, edm_layers.resample_kernel((1, 1)), 0)
  np.testing.assert_array_equal(up, jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


@pytest.mark.parametrize('mode', ['up', 'down'])
@pytest.mark.parametrize('fused', [False, True])
def test_conv2d_resample_order_and_padding(x_img, mode, fused):
  """Conv2d(up/down, fused or not) = the PyTorch op sequence of EDM's Conv2d, with f=[1,3,3,1]."""
  filt = (1, 3, 3, 1)
  layer = edm_layers.Conv2d(5, 3, up=mode == 'up', down=mode == 'down', resample_filter=filt,
                            fused_resample=fused)
  variables = jax.eval_shape(layer.init, jax.random.key(0), nhwc(x_img))
  assert variables['buffers']['resample_filter'].shape == (1, 1, 4, 4)
  params = random_params(layer, nhwc(x_img))
  got = nchw(layer.apply({'params': params}, nhwc(x_img)))
  w = np.transpose(np.asarray(params['weight']), (3, 2, 0, 1)).astype(np.float64)
  b = np.asarray(params['bias'])[None, :, None, None]
  f = edm_layers.resample_kernel(filt)
  c_in, c_out = x_img.shape[1], w.shape[0]
  if mode == 'up' and fused:  # f_pad = 1 = w_pad: transposed filter without padding, then conv
    want = ref_conv2d(ref_conv_transpose2d(x_img, 4 * np.tile(f[None, None], (c_in, 1, 1, 1)),
                                           pad=0, groups=c_in), w, pad=0)
  elif mode == 'down' and fused:  # conv padded by w_pad + f_pad, then strided filter
    want = ref_conv2d(ref_conv2d(x_img, w, pad=2), np.tile(f[None, None], (c_out, 1, 1, 1)),
                      stride=2, groups=c_out)
  elif mode == 'up':
    want = ref_conv2d(ref_conv_transpose2d(x_img, 4 * np.tile(f[None, None], (c_in, 1, 1, 1)),
                                           pad=1, groups=c_in), w, pad=1)
  else:
    want = ref_conv2d(ref_conv2d(x_img, np.tile(f[None, None], (c_in, 1, 1, 1)), stride=2, pad=1,
                                 groups=c_in), w, pad=1)
  np.testing.assert_allclose(got, want + b, rtol=1e-4, atol=1e-4)


def test_group_norm_matches_definition():
  x = np.random.RandomState(1).standard_normal((2, 3, 3, 24)).astype(np.float32) * 3 + 1
  layer = edm_layers.GroupNorm(eps=1e-6)  # 24 channels -> min(32, 24 // 4) = 6 groups
  params = {'weight': jnp.linspace(0.5, 2, 24), 'bias': jnp.linspace(-1, 1, 24)}
  got = np.asarray(layer.apply({'params': params}, jnp.asarray(x)))
  g = x.reshape(2, 3, 3, 6, 4).astype(np.float64)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  want = ((g - mean) / np.sqrt(var + 1e-6)).reshape(x.shape) * np.asarray(params['weight'])
  np.testing.assert_allclose(got, want + np.asarray(params['bias']), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='cannot be split'):
    edm_layers.GroupNorm().init(jax.random.key(0), jnp.zeros((1, 2, 2, 3)))


def test_group_norm_modulation_and_silu_match_the_plain_composition():
  """silu(shift + GN(x) * (scale + 1)) with the backward recomputed from x (jax.checkpoint):
  value, reverse-mode gradients of every input, and forward-mode derivative (the flow-map losses
  take a JVP through the U-Nets) equal those of the composition without rematerialisation."""
  rs = np.random.RandomState(2)
  x = jnp.asarray(rs.standard_normal((2, 4, 4, 16)), jnp.float32) * 2 + 0.5
  scale, shift = (jnp.asarray(rs.standard_normal((2, 1, 1, 16)), jnp.float32) for _ in range(2))
  params = {'weight': jnp.linspace(0.5, 2, 16), 'bias': jnp.linspace(-1, 1, 16)}
  layer = edm_layers.GroupNorm(eps=1e-5)

  def fused(x, params, scale, shift):
    return layer.apply({'params': params}, x, scale=scale, shift=shift, silu=True)

  def plain(x, params, scale, shift):  # 4 groups of 4 channels
    g = x.reshape(2, 4, 4, 4, 4)
    g = (g - g.mean((1, 2, 4), keepdims=True)) * jax.lax.rsqrt(g.var((1, 2, 4), keepdims=True)
                                                               + 1e-5)
    return jax.nn.silu(shift + (g.reshape(x.shape) * params['weight'] + params['bias'])
                       * (scale + 1))

  args = (x, params, scale, shift)
  np.testing.assert_allclose(fused(*args), plain(*args), rtol=1e-5, atol=1e-6)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
  got, want = (jax.grad(loss(f), argnums=(0, 1, 2, 3))(*args) for f in (fused, plain))
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
  tangents = (jnp.ones_like(x), jax.tree_util.tree_map(jnp.zeros_like, params),
              jnp.zeros_like(scale), jnp.ones_like(shift))
  (_, d_got), (_, d_want) = (jax.jvp(f, args, tangents) for f in (fused, plain))
  np.testing.assert_allclose(d_got, d_want, rtol=1e-4, atol=1e-5)


def test_softmax_and_its_derivatives_match_jax_nn_softmax():
  """Values, reverse-mode gradient and forward-mode derivative of the attention's softmax against
  jax.nn.softmax's, at logits with a large spread."""
  rs = np.random.RandomState(3)
  x = jnp.asarray(rs.standard_normal((2, 3, 5, 7)) * 10, jnp.float32)
  np.testing.assert_allclose(edm_layers.softmax(x), jax.nn.softmax(x, axis=-1), rtol=1e-6,
                             atol=1e-7)
  w = jnp.asarray(rs.standard_normal(x.shape), jnp.float32)
  loss = lambda f: lambda x: jnp.sum(jnp.sin(3 * f(x)) * w)  # noqa: E731
  np.testing.assert_allclose(jax.grad(loss(edm_layers.softmax))(x),
                             jax.grad(loss(lambda x: jax.nn.softmax(x, axis=-1)))(x),
                             rtol=1e-4, atol=1e-6)
  t = jnp.asarray(rs.standard_normal(x.shape), jnp.float32)
  np.testing.assert_allclose(jax.jvp(edm_layers.softmax, (x,), (t,))[1],
                             jax.jvp(lambda x: jax.nn.softmax(x, axis=-1), (x,), (t,))[1],
                             rtol=1e-4, atol=1e-6)


def test_group_norm_scale_and_its_derivatives_are_the_product():
  """edm_layers._scale(x, a) against x * a: values, gradients in both, and the JVP."""
  rs = np.random.RandomState(7)
  x = jnp.asarray(rs.standard_normal((2, 3, 4, 5)), jnp.float32)
  a = jnp.asarray(rs.standard_normal((2, 1, 1, 5)), jnp.float32)
  ct = jnp.asarray(rs.standard_normal(x.shape), jnp.float32)
  tangents = (jnp.asarray(rs.standard_normal(x.shape), jnp.float32),
              jnp.asarray(rs.standard_normal(a.shape), jnp.float32))
  product = lambda x, a: x * a  # noqa: E731
  for got, want in [
      (edm_layers._scale(x, a), product(x, a)),
      (jax.vjp(edm_layers._scale, x, a)[1](ct), jax.vjp(product, x, a)[1](ct)),
      (jax.jvp(edm_layers._scale, (x, a), tangents), jax.jvp(product, (x, a), tangents))]:
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_attention_projection_is_the_1x1_convolution_split_as_pytorch_splits_it():
  """Same parameters as Conv2d(3C, 1) (names, shapes, initial values), and q, k, v equal to that
  convolution's output split as (head, channel, q/k/v), the key divided by sqrt(C / heads)."""
  x = jnp.asarray(np.random.RandomState(4).standard_normal((2, 4, 4, 16)), jnp.float32)
  spec = edm_layers.InitSpec(mode='xavier_uniform', bias=0.5)
  proj = edm_layers.AttentionProjection(2, init_spec=spec)
  conv = edm_layers.Conv2d(48, 1, init_spec=spec)
  key = jax.random.PRNGKey(5)
  params, conv_params = proj.init(key, x)['params'], conv.init(key, x)['params']
  assert jax.tree.structure(params) == jax.tree.structure(conv_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(conv_params)):
    np.testing.assert_array_equal(a, b)
  params = random_params(proj, x, seed=6)
  q, k, v = proj.apply({'params': params}, x)
  want = conv.apply({'params': params}, x).reshape(2, 16, 2, 8, 3)
  want = np.transpose(want, (0, 2, 1, 3, 4)).reshape(4, 16, 8, 3)  # [example * head, pixel, ...]
  np.testing.assert_allclose(q, want[..., 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(k, want[..., 1] / np.sqrt(8), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v, want[..., 2], rtol=1e-5, atol=1e-6)
  merged = conv.apply({'params': params}, x).reshape(2, 4, 4, 16, 3)[..., 2]
  np.testing.assert_allclose(edm_layers.merge_heads(v, (2, 4, 4, 16)), merged, rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match='16 channels cannot be split into 3 heads'):
    edm_layers.AttentionProjection(3).init(key, x)


@pytest.mark.parametrize('heads', [1, 3])
def test_attention_of_each_head_against_numpy(heads):
  """Heads folded into the batch and back: channel h * D + d of the output is head h's."""
  b, hw, d = 2, (3, 4), 5
  rs = np.random.RandomState(heads)
  q, k, v = (rs.standard_normal((b * heads, 12, d)).astype(np.float32) for _ in range(3))
  got = edm_layers.attention(q, k, v, (b,) + hw + (heads * d,))
  want = np.zeros((b, 12, heads, d))
  for i in range(b):
    for h in range(heads):
      n = i * heads + h
      logits = q[n].astype(np.float64) @ k[n].T.astype(np.float64)
      weights = np.exp(logits - logits.max(-1, keepdims=True))
      want[i, :, h] = weights / weights.sum(-1, keepdims=True) @ v[n]
  np.testing.assert_allclose(got, want.reshape((b,) + hw + (heads * d,)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('mode,uniform,std', [
    ('xavier_uniform', True, np.sqrt(2 / (300 + 200))),
    ('xavier_normal', False, np.sqrt(2 / (300 + 200))),
    ('kaiming_uniform', True, np.sqrt(1 / 300)),
    ('kaiming_normal', False, np.sqrt(1 / 300)),
])
def test_init_modes_have_the_official_scale(mode, uniform, std):
  w = np.asarray(edm_layers.scaled_init(mode, fan_in=300, fan_out=200, scale=0.5)(
      jax.random.key(0), (300, 200)))
  np.testing.assert_allclose(w.std(), 0.5 * std, rtol=0.02)
  if uniform:  # U(-a, a) with a = sqrt(3) std
    assert np.abs(w).max() <= 0.5 * std * np.sqrt(3) * (1 + 1e-6)
  with pytest.raises(ValueError, match="valid modes: .*'kaiming_normal'"):
    edm_layers.scaled_init('he', fan_in=1, fan_out=1, scale=1)


def test_param_draws_like_flax_and_checks_the_shape():
  init = edm_layers.scaled_init('kaiming_normal', fan_in=3, fan_out=4, scale=1.0)

  class Ours(nn.Module):
    @nn.compact
    def __call__(self, x):
      return x @ edm_layers.param(self, 'w', init, (3, 4)) + edm_layers.param(self, 'b', init, (4,))

  class Flax(nn.Module):
    @nn.compact
    def __call__(self, x):
      return x @ self.param('w', init, (3, 4)) + self.param('b', init, (4,))

  x = jnp.ones((2, 3))
  ours, flax_params = Ours().init(jax.random.key(0), x), Flax().init(jax.random.key(0), x)
  jax.tree.map(np.testing.assert_array_equal, ours, flax_params)  # the same keys, in order
  np.testing.assert_array_equal(Ours().apply(ours, x), Flax().apply(flax_params, x))
  wrong = {'params': {**ours['params'], 'w': jnp.ones((4, 4))}}
  with pytest.raises(ValueError, match=r'w: the parameter has shape \(4, 4\).*builds \(3, 4\)'):
    Ours().apply(wrong, jnp.ones((2, 4)))


SONG_TINY = dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=8,
                 channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)
ADM_TINY = dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=8,
                channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)


def _inputs(batch=2, label_dim=0, seed=0):
  rs = np.random.RandomState(seed)
  x = jnp.asarray(rs.standard_normal((batch, 8, 8, 3)), jnp.float32)
  noise = jnp.asarray(rs.standard_normal(batch), jnp.float32)
  if not label_dim:
    return x, noise, None
  return x, noise, jnp.eye(label_dim, dtype=jnp.float32)[rs.randint(0, label_dim, batch)]


def test_init_follows_the_official_modes():
  """One real `init` per network, one level each: jax random init compiles slowly on CPU (rbg
  keys compile faster than threefry)."""
  x, noise, labels = _inputs(label_dim=10)
  adm = DhariwalUNet(**{**ADM_TINY, 'channel_mult': (1,)}, label_dim=10, augment_dim=4)
  p = adm.init(jax.random.key(0, impl='rbg'), x, noise, labels)['params']
  # ADM zero-initialises the last conv, conv1 of every block and the augment mapping ...
  assert not np.any(adm.apply({'params': p}, x, noise, labels, jnp.ones((2, 4))))
  for leaf in (p['out_conv']['weight'], p['map_augment']['weight'],
               p['enc_8x8_block0']['conv1']['weight'], p['enc_8x8_block0']['conv1']['bias']):
    assert not np.any(leaf)
  # ... draws the rest kaiming-uniform * sqrt(1/3), bias included, and the labels N(0, 1).
  w = np.asarray(p['map_layer1']['weight'])  # fan_in 32: bound sqrt(3/32) * sqrt(1/3)
  assert np.abs(w).max() <= np.sqrt(1 / 32) + 1e-7 and w.std() > 0.5 * np.sqrt(1 / 96)
  assert np.abs(np.asarray(p['map_layer1']['bias'])).max() > 0
  np.testing.assert_allclose(np.asarray(p['map_label']['weight']).std(), 1.0, rtol=0.3)
  assert 'bias' not in p['map_label']

  song = SongUNet(**{**SONG_TINY, 'channel_mult': (1,), 'attn_resolutions': (8,)},
                  embedding_type='fourier', channel_mult_noise=2)
  q = song.init(jax.random.key(1, impl='rbg'), x, noise)['params']
  # NCSN++ frequencies ~ N(0, 16^2); xavier-uniform everywhere, last conv scaled by 1e-5.
  assert 8 < np.asarray(q['map_noise']['freqs']).std() < 32
  aux = np.asarray(q['dec_8x8_aux_conv']['weight'])  # fans 8*9 and 3*9
  assert 0 < np.abs(aux).max() <= 1e-5 * np.sqrt(6 / (8 * 9 + 3 * 9)) * (1 + 1e-6)
  assert not np.any(q['dec_8x8_aux_conv']['bias'])
  qkv = np.asarray(q['dec_8x8_in0']['qkv']['weight'])  # 8 -> 24: bound sqrt(0.2) sqrt(6/32)
  assert np.abs(qkv).max() <= np.sqrt(0.2 * 6 / 32) * (1 + 1e-6)
  np.testing.assert_array_equal(q['enc_8x8_block0']['norm0']['weight'], np.ones(8))
  assert 0 < np.abs(np.asarray(song.apply({'params': q}, x, noise))).max() < 1e-3


def test_fourier_frequencies_get_no_gradient():
  layer = edm_layers.FourierEmbedding(8)
  noise = jnp.linspace(-1, 1, 3)
  params = random_params(layer, noise)
  grads = jax.grad(lambda p: jnp.sum(layer.apply({'params': p}, noise)))(params)
  assert not np.any(grads['freqs'])
  np.testing.assert_allclose(layer.apply({'params': params}, jnp.zeros(1)),
                             np.r_[np.ones(4), np.zeros(4)][None])


@pytest.fixture(scope='module')
def conditional_song():
  """A conditional SongUNet, its parameters and a batch of 256, shared so that eager kernels
  compile once."""
  x, noise, labels = _inputs(batch=256, label_dim=5)
  net = SongUNet(**SONG_TINY, label_dim=5)
  return net, random_params(net, x, noise, labels), (x, noise, labels)


def test_label_dropout_zeroes_whole_label_vectors_at_the_given_rate(conditional_song):
  net, params, (x, noise, labels) = conditional_song
  rate = 0.3
  net = net.clone(label_dropout=rate)
  apply = lambda **kw: np.asarray(net.apply({'params': params}, x, noise, **kw))
  kept, dropped = apply(class_labels=labels), apply(class_labels=jnp.zeros_like(labels))
  rngs = {'label_dropout': jax.random.key(2, impl='rbg')}  # rbg: compiles faster than threefry
  out = apply(class_labels=labels, train=True, rngs=rngs)
  is_dropped = np.all(np.isclose(out, dropped, atol=1e-6), axis=(1, 2, 3))
  is_kept = np.all(np.isclose(out, kept, atol=1e-6), axis=(1, 2, 3))
  assert np.all(is_dropped ^ is_kept)  # every example is exactly one of the two
  assert abs(is_dropped.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / len(x))
  np.testing.assert_array_equal(apply(class_labels=labels), kept)  # evaluation never drops


def test_dropout_only_in_training(conditional_song):
  net, params, (x, noise, labels) = conditional_song
  net = net.clone(dropout=0.5)
  run = lambda seed, train: np.asarray(net.apply(
      {'params': params}, x, noise, labels, train=train,
      rngs={'dropout': jax.random.key(seed, impl='rbg')}))
  np.testing.assert_array_equal(run(0, False), run(1, False))
  np.testing.assert_array_equal(run(3, True), run(3, True))
  assert not np.allclose(run(3, True), run(4, True))
  assert not np.allclose(run(3, True), run(0, False))


def test_adm_attention_heads_follow_channels_per_head():
  """ADM uses out_channels // 64 heads: none below 64 channels, as in the official code."""
  x, noise, _ = _inputs()
  shapes = lambda **kw: jax.eval_shape(DhariwalUNet(**{**ADM_TINY, **kw}).init,
                                       jax.random.key(0), x, noise)['params']
  assert 'qkv' not in shapes()['dec_4x4_in0']
  big = shapes(model_channels=32)
  assert big['dec_4x4_in0']['qkv']['weight'].shape == (1, 1, 64, 192)
  assert 'qkv' not in big['dec_8x8_block0']


@pytest.mark.parametrize('kwargs,match', [
    (dict(encoder_type='fancy'), r"encoder_type 'fancy'; valid: \['residual', 'skip', 'standard'"),
    (dict(decoder_type='residual'), "decoder_type 'residual'; valid"),
    (dict(embedding_type='learned'), r"embedding_type 'learned'; valid: \['fourier', 'positional'"),
])
def test_song_unet_rejects_unknown_choices(kwargs, match):
  x, noise, _ = _inputs()
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(SongUNet(**SONG_TINY, **kwargs).init, jax.random.key(0), x, noise)


def test_networks_check_their_inputs():
  x, noise, _ = _inputs()
  init = lambda net, *args: jax.eval_shape(net.init, jax.random.key(0), *args)
  with pytest.raises(ValueError, match=r'x of shape \[B, H, W, 3\]'):
    init(SongUNet(**SONG_TINY), x[..., :2], noise)
  with pytest.raises(ValueError, match=r'noise_labels of shape \[2\]'):
    init(DhariwalUNet(**ADM_TINY), x, noise[:1])
  with pytest.raises(ValueError, match='class_labels must have 4 columns'):
    init(SongUNet(**SONG_TINY, label_dim=4), x, noise, jnp.zeros((2, 3)))
