"""Feature outputs of the networks (`return_features=True`) and the discriminator head."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.nets.dhariwal_unet import DhariwalUNet
from onestep_jax.nets.discriminator import DiscriminatorHead
from onestep_jax.nets.mlp import MLP
from onestep_jax.nets.song_unet import SongUNet
from test_nets_edm import random_params

# 8x8 input, channel_mult (1, 2): one downsampling, so the bottleneck is 4x4 with 2 * 16 channels.
TINY = dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=16,
            channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)


def _batch(shape, label_dim, seed=0):
  """Three examples: 0 and 1 share noise level and label but differ in x; 2 differs in all."""
  rs = np.random.RandomState(seed)
  x = rs.standard_normal((3,) + shape).astype(np.float32)
  noise = np.array([0.3, 0.3, -0.8], np.float32)
  labels = np.eye(label_dim, dtype=np.float32)[[1, 1, 0]] if label_dim else None
  return jnp.asarray(x), jnp.asarray(noise), None if labels is None else jnp.asarray(labels)


def _same_tree(a, b):
  shapes = lambda t: jax.tree_util.tree_map(lambda v: v.shape, t)
  return shapes(a) == shapes(b)


@pytest.mark.parametrize('net_cls,label_dim', [(SongUNet, 4), (DhariwalUNet, 0)])
def test_unet_features_are_the_bottleneck(net_cls, label_dim):
  x, noise, labels = _batch((8, 8, 3), label_dim)
  net = net_cls(**TINY, label_dim=label_dim)
  params = random_params(net, x, noise, labels)
  with_features = jax.eval_shape(
      lambda: net.init(jax.random.key(0), x, noise, labels, return_features=True)['params'])
  assert _same_tree(with_features, params)  # the flag adds no parameter

  variables = {'params': params}
  out = net.apply(variables, x, noise, labels)
  (out_f, features), state = net.apply(
      variables, x, noise, labels, return_features=True,
      capture_intermediates=lambda module, _: module.name == 'enc_4x4_block0')
  np.testing.assert_array_equal(out_f, out)
  assert features.shape == (3, 4, 4, 2 * TINY['model_channels'])
  # The last encoder block at the lowest resolution, which feeds dec_4x4_in0.
  np.testing.assert_array_equal(features, state['intermediates']['enc_4x4_block0']['__call__'][0])
  assert not np.allclose(features[0], features[1], atol=1e-3)  # same noise and label, other x


def test_mlp_features_are_the_input_of_the_last_layer():
  x, noise, labels = _batch((2,), label_dim=3)
  net = MLP(data_dim=2, hidden_dim=32, num_layers=2, embedding_dim=16, label_dim=3)
  params = random_params(net, x, noise, labels)
  with_features = jax.eval_shape(
      lambda: net.init(jax.random.key(0), x, noise, labels, return_features=True)['params'])
  assert _same_tree(with_features, params)

  out = net.apply({'params': params}, x, noise, labels)
  out_f, features = net.apply({'params': params}, x, noise, labels, return_features=True)
  np.testing.assert_array_equal(out_f, out)
  assert features.shape == (3, 32)
  last = params[f'Dense_{len(params) - 1}']  # the output layer, created last
  assert last['kernel'].shape == (32, 2)
  np.testing.assert_allclose(features @ last['kernel'] + last['bias'], out, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(features) > -0.2785)  # silu's minimum: an activation, not pre-activation
  assert not np.allclose(features[0], features[1], atol=1e-3)


FEATURE_SHAPES = {'vector': (5, 24), 'image_4x4': (5, 4, 4, 32), 'image_7x7': (5, 7, 7, 8)}


def _head(num_classes):
  return DiscriminatorHead(hidden_dim=16, num_groups=4, num_classes=num_classes)


def _one_hot(classes, num_classes=3):
  return jnp.asarray(np.eye(num_classes, dtype=np.float32)[classes])


def _features(kind, seed=0):
  return jnp.asarray(np.random.RandomState(seed).standard_normal(FEATURE_SHAPES[kind]),
                     jnp.float32)


@pytest.mark.parametrize('num_classes', [0, 3])
@pytest.mark.parametrize('kind', sorted(FEATURE_SHAPES))
def test_discriminator_logits_and_gradients(kind, num_classes):
  features = _features(kind)
  labels = _one_hot(np.arange(5) % 3) if num_classes else None
  head = _head(num_classes)
  params = head.init(jax.random.key(0, impl='rbg'), features, labels)
  logits = head.apply(params, features, labels)
  assert logits.shape == (5,) and np.all(np.isfinite(logits))
  # Examples are scored independently (GroupNorm normalises within an example).
  first_two = head.apply(params, features[:2], None if labels is None else labels[:2])
  np.testing.assert_allclose(first_two, logits[:2], rtol=1e-5, atol=1e-6)
  grad = jax.grad(lambda f: head.apply(params, f, labels).sum())(features)
  assert grad.shape == features.shape
  assert np.all(np.abs(np.asarray(grad)).reshape(5, -1).max(axis=1) > 0)  # every example


@pytest.mark.parametrize('kind', ['vector', 'image_4x4'])
def test_discriminator_label_projection(kind):
  """Projection (arXiv 1802.05637): logit(y) = logit(0) + <embed(y), phi>, linear in y."""
  features = _features(kind, seed=1)
  head = _head(3)
  params = head.init(jax.random.key(1, impl='rbg'), features, _one_hot([0] * 5))
  logit = lambda y: np.asarray(head.apply(params, features, y), np.float64)
  l0, l1, l2 = (logit(_one_hot([k] * 5)) for k in range(3))
  assert np.all(np.abs(l0 - l1) > 1e-4) and np.all(np.abs(l1 - l2) > 1e-4)
  np.testing.assert_array_equal(logit(None), logit(jnp.zeros((5, 3))))  # no label, no term
  np.testing.assert_allclose(logit((_one_hot([0] * 5) + _one_hot([1] * 5)) / 2), (l0 + l1) / 2,
                             rtol=1e-5, atol=1e-5)


def test_discriminator_rejects_bad_inputs():
  init = lambda head, *args: jax.eval_shape(head.init, jax.random.key(0), *args)
  with pytest.raises(ValueError, match='num_classes = 0'):
    init(_head(0), _features('vector'), _one_hot([0] * 5))
  with pytest.raises(ValueError, match=r'labels must have shape \[5, 3\]'):
    init(_head(3), _features('vector'), _one_hot([0] * 5, 2))
  with pytest.raises(ValueError, match=r'features \[B, C\] or \[B, H, W, C\]'):
    init(_head(0), jnp.zeros((5, 4, 4)))
