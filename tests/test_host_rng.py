"""Network initialisation with host-side random draws (onestep_jax.nets.host_rng) and the
compilation-cache location."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.methods.networks import init_network
from onestep_jax.nets.dhariwal_unet import DhariwalUNet
from onestep_jax.nets.host_rng import HOST_PHILOX, call_with_host_draws, host_key
from onestep_jax.nets.mlp import MLP
from onestep_jax.nets.song_unet import SongUNet
from onestep_jax.train import compilation_cache

TINY = dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=8, channel_mult=(1,),
            num_blocks=1, attn_resolutions=(8,), dropout=0.0)


def _data(key):
  return np.asarray(jax.random.key_data(key))


def test_keys_are_deterministic_distinct_and_the_same_under_jit():
  k = host_key(jax.random.PRNGKey(3))
  assert jax.random.key_impl(k) == jax.random.key_impl(jax.random.key(0, impl=HOST_PHILOX))
  # A typed threefry key and its raw words give the same host key, eagerly and under jit.
  np.testing.assert_array_equal(_data(k), _data(host_key(jax.random.key(3))))
  np.testing.assert_array_equal(_data(k), _data(jax.jit(host_key)(jax.random.PRNGKey(3))))
  children = [_data(c) for c in jax.random.split(k, 4)]
  folded = [_data(jax.random.fold_in(k, i)) for i in range(4)]
  words = {tuple(w) for w in children + folded + [_data(k), _data(host_key(jax.random.PRNGKey(4)))]}
  assert len(words) == 10
  np.testing.assert_array_equal(_data(jax.random.split(k, 4)[2]), children[2])


def test_draws_have_the_distributions_of_jax_random():
  k = host_key(jax.random.PRNGKey(0))
  n = 200_000
  z = np.asarray(jax.random.normal(k, (n,)))
  assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.std() - 1) < 0.01
  assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.005  # the normal's mass within one sd
  u = np.asarray(jax.random.uniform(jax.random.fold_in(k, 1), (n,), minval=-1, maxval=1))
  assert u.min() >= -1 and u.max() < 1
  np.testing.assert_allclose(np.histogram(u, 10, (-1, 1))[0] / n, 0.1, atol=0.003)
  bits = np.asarray(jax.random.bits(jax.random.fold_in(k, 2), (n,), jnp.uint32))
  ones = (bits[:, None] >> np.arange(32, dtype=np.uint32)) & 1
  np.testing.assert_allclose(ones.mean(0), 0.5, atol=0.005)  # every bit position fair
  # The same key draws the same values eagerly and inside jit.
  np.testing.assert_array_equal(
      z[:100], np.asarray(jax.jit(lambda key: jax.random.normal(key, (n,)))(k))[:100])


def test_init_network_is_deterministic_and_follows_the_official_modes():
  song = SongUNet(**TINY, label_dim=10)
  p = init_network(song, jax.random.PRNGKey(0), example_shape=(8, 8, 3), num_classes=10)
  same = init_network(song, jax.random.PRNGKey(0), example_shape=(8, 8, 3), num_classes=10)
  other = init_network(song, jax.random.PRNGKey(1), example_shape=(8, 8, 3), num_classes=10)
  for a, b, c in zip(*(jax.tree.leaves(t) for t in (p, same, other))):
    np.testing.assert_array_equal(a, b)
    assert a.size == 1 or np.all(a == 0) or np.all(a == 1) or not np.array_equal(a, c)
  # DDPM++: xavier-uniform, bound sqrt(6 / (fan_in + fan_out)), uniform std = bound / sqrt(3).
  w = np.asarray(p['enc_8x8_block0']['conv0']['weight'])  # 3x3 conv 8 -> 8: fans 72 and 72
  bound = np.sqrt(6 / 144)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
  np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.1)
  aux = np.asarray(p['dec_8x8_aux_conv']['weight'])  # last conv scaled by 1e-5
  assert 0 < np.abs(aux).max() <= 1e-5 * np.sqrt(6 / (8 * 9 + 3 * 9)) * (1 + 1e-6)
  np.testing.assert_array_equal(p['enc_8x8_block0']['norm0']['weight'], np.ones(8))
  assert not np.any(p['enc_8x8_block0']['conv0']['bias'])

  adm = DhariwalUNet(**TINY, label_dim=10)
  q = init_network(adm, jax.random.PRNGKey(0), example_shape=(8, 8, 3), num_classes=10)
  # ADM: kaiming-uniform * sqrt(1/3) (bound sqrt(1 / fan_in)), zero last conv, N(0, 1) labels.
  v = np.asarray(q['map_layer1']['weight'])  # fan_in 32
  assert np.abs(v).max() <= np.sqrt(1 / 32) + 1e-7
  np.testing.assert_allclose(v.std(), np.sqrt(1 / 32) / np.sqrt(3), rtol=0.1)
  assert not np.any(q['out_conv']['weight'])
  np.testing.assert_allclose(np.asarray(q['map_label']['weight']).std(), 1.0, rtol=0.3)


def _same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('module', [SongUNet(**TINY, label_dim=10),
                                    DhariwalUNet(**TINY, label_dim=10)], ids=['song', 'adm'])
def test_host_draws_as_arguments_give_the_host_callbacks_values(module):
  x, t, labels = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,)), jnp.zeros((1, 10))

  def init(k):
    k_params, k_drop = jax.random.split(k)
    return module.init({'params': k_params, 'dropout': k_drop}, x, t, labels)['params']

  with_callbacks = jax.jit(lambda k: init(host_key(k)))(jax.random.PRNGKey(5))
  _same(call_with_host_draws(init, jax.random.PRNGKey(5)), with_callbacks)
  # init_network takes this path for a concrete key and the callbacks' under a trace.
  net = MLP(data_dim=2, hidden_dim=16, num_layers=2, label_dim=3)
  concrete = init_network(net, jax.random.PRNGKey(2), example_shape=(2,), num_classes=3)
  _same(concrete, jax.jit(lambda k: init_network(net, k, example_shape=(2,), num_classes=3))(
      jax.random.PRNGKey(2)))


def test_host_draws_cover_key_arrays_words_and_every_bit_width():
  def fn(k):
    keys = jax.random.split(k, (2, 3))
    row = jnp.concatenate([keys[1], keys[0, :1]])  # slicing, squeezing, concatenating keys
    folded = jax.vmap(jax.random.fold_in)(row, np.arange(4, dtype=np.uint32))
    return {'normal': jax.random.normal(folded[2], (5,)),
            'batched': jax.vmap(lambda kk: jax.random.uniform(kk, (3,)))(folded),
            'bits': [jax.random.bits(jax.random.fold_in(k, 9), (7,), d)
                     for d in (jnp.uint8, jnp.uint16, jnp.uint32, jnp.uint64)
                     if jnp.dtype(d).itemsize <= 4 or jax.config.jax_enable_x64],
            'words': jax.random.key_data(keys[1, 2]),
            'passed_through': jax.random.normal(jax.jit(lambda kk: kk)(k), (2,)),
            'seeded': jax.random.normal(jax.random.key(7, impl=HOST_PHILOX), (2,))}

  _same(call_with_host_draws(fn, jax.random.PRNGKey(1)),
        jax.jit(lambda k: fn(host_key(k)))(jax.random.PRNGKey(1)))


def test_host_draws_refuse_what_they_cannot_derive():
  with pytest.raises(ValueError, match='must not return keys'):
    call_with_host_draws(lambda k: jax.random.split(k), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='only host_philox keys'):
    call_with_host_draws(lambda k: jax.random.normal(jax.random.key(0), (2,)), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='needs a value computed in the program'):
    call_with_host_draws(lambda k: jax.random.normal(jax.random.fold_in(k, jnp.arange(3)[1]), ()),
                         jax.random.PRNGKey(0))


_WARM_START = """
import sys, jax, numpy as np
from onestep_jax.methods.networks import init_network
from onestep_jax.nets.song_unet import SongUNet
from onestep_jax.train.compilation_cache import enable_compilation_cache
enable_compilation_cache(sys.argv[1])
hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event))
params = init_network(SongUNet(**%r), jax.random.PRNGKey(0), example_shape=(8, 8, 3),
                      num_classes=0)
print(hits.count('/jax/compilation_cache/compile_requests_use_cache'),
      hits.count('/jax/compilation_cache/cache_hits'),
      sum(float(np.abs(x).sum()) for x in jax.tree.leaves(params)))
"""


def test_a_second_process_loads_the_initialisation_program(tmp_path):
  """The program has no host callbacks, so JAX's persistent cache keeps it for the next run."""
  run = lambda: subprocess.run([sys.executable, '-c', _WARM_START % TINY, str(tmp_path)],
                               check=True, capture_output=True, text=True).stdout.split()
  (_, cold_hits, cold_sum), (warm_requests, warm_hits, warm_sum) = run(), run()
  # Every program of the second process, the initialisation's included, is a cache hit (with
  # host callbacks in it, the initialisation's is compiled again: 7 hits in 8 requests).
  assert int(cold_hits) == 0 and int(warm_hits) == int(warm_requests) >= 1
  assert cold_sum == warm_sum and float(cold_sum) > 0


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation_cache.CACHE_DIR_ENV, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compilation_cache.default_cache_dir() == str(tmp_path / 'xdg' / 'onestep_jax' / 'xla')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert compilation_cache.default_cache_dir() == str(
      tmp_path / 'home' / '.cache' / 'onestep_jax' / 'xla')
  monkeypatch.setenv(compilation_cache.CACHE_DIR_ENV, str(tmp_path / 'mine'))
  assert compilation_cache.default_cache_dir() == str(tmp_path / 'mine')
