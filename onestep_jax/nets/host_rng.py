"""A JAX PRNG implementation that draws on the host, for fast network initialisation on CPU.

Flax derives one key per parameter (a `fold_in` of the parameter's path) and draws every
parameter separately; with the default threefry implementation each of those is its own
compiled kernel, and XLA:CPU takes ~50-100 ms to compile each one, so a U-Net's jitted `init`
took 13-18 s to compile for 0.02 s of work. With `HOST_PHILOX` keys, `seed`, `split`,
`fold_in` and `random_bits` are host callbacks into NumPy (SeedSequence for key derivation,
Philox-4x64 for the bits), so the compiled init holds only custom calls and the float
transforms of `jax.random.normal` / `uniform`, and compiles in well under a second.

The draws are deterministic: a function of the key words and the call sequence only, the same
on every backend and process (NumPy guarantees both streams are stable across versions). The
distributions are exactly those of the initialisers (`jax.random.normal` etc. turn these bits
into floats as they do threefry's). Meant for initialisation; training keeps threefry keys.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import define_prng_impl

_UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
_SPLIT, _FOLD = 0x5EED_0001, 0x5EED_0002  # domain tags: split and fold_in never collide


def _host(fn, shape, dtype, *args) -> jax.Array:
  return jax.pure_callback(fn, jax.ShapeDtypeStruct(tuple(shape), dtype), *args,
                           vmap_method='sequential')


def _words(*parts, n: int) -> np.ndarray:
  """n uint32 words derived from the integers in `parts` (arrays are flattened)."""
  entropy = [int(w) for p in parts for w in np.ravel(p)]
  return np.random.SeedSequence(entropy).generate_state(n, np.uint32)


def _seed(seed: jax.Array) -> jax.Array:
  return _host(lambda s: _words(s, n=2), (2,), jnp.uint32, jnp.asarray(seed, jnp.uint32))


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  n = int(np.prod(shape))
  return _host(lambda k: _words(k, _SPLIT, n=2 * n).reshape(*shape, 2), (*shape, 2),
               jnp.uint32, key)


def _fold_in(key: jax.Array, data) -> jax.Array:
  return _host(lambda k, d: _words(k, _FOLD, d, n=2), (2,), jnp.uint32, key,
               jnp.asarray(data, jnp.uint32))


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
  dtype = _UINT[bit_width]
  n = int(np.prod(shape))

  def draw(k):
    raw = np.random.Philox(key=(int(k[0]) << 32) | int(k[1])).random_raw(-(-n * bit_width // 64))
    return raw.view(dtype)[:n].reshape(shape)

  return _host(draw, shape, dtype, key)


HOST_PHILOX = define_prng_impl(key_shape=(2,), seed=_seed, split=_split, fold_in=_fold_in,
                               random_bits=_random_bits, name='host_philox')


def host_key(key: jax.Array) -> jax.Array:
  """A `HOST_PHILOX` key derived from any key (typed or raw uint32 words); works under jit."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return jax.random.wrap_key_data(
      _host(lambda k: _words(k, n=2), (2,), jnp.uint32, key), impl=HOST_PHILOX)
