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

A program holding host callbacks is compiled again in every process (JAX's persistent cache
skips it). `call_with_host_draws(fn, key)` gives the same values as `jax.jit(fn)(key)` from a
program without them: the key derivations and the random bits run in NumPy before the call and
enter it as arguments, so a warm start loads the program instead of compiling it.
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


def _seed_words(s) -> np.ndarray:
  return _words(s, n=2)


def _split_words(k, shape: tuple[int, ...]) -> np.ndarray:
  return _words(k, _SPLIT, n=2 * int(np.prod(shape))).reshape(*shape, 2)


def _fold_in_words(k, d) -> np.ndarray:
  return _words(k, _FOLD, d, n=2)


def _draw(k, bit_width: int, shape: tuple[int, ...]) -> np.ndarray:
  n = int(np.prod(shape))
  raw = np.random.Philox(key=(int(k[0]) << 32) | int(k[1])).random_raw(-(-n * bit_width // 64))
  return raw.view(_UINT[bit_width])[:n].reshape(shape)


def _seed(seed: jax.Array) -> jax.Array:
  return _host(_seed_words, (2,), jnp.uint32, jnp.asarray(seed, jnp.uint32))


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  return _host(lambda k: _split_words(k, shape), (*shape, 2), jnp.uint32, key)


def _fold_in(key: jax.Array, data) -> jax.Array:
  return _host(_fold_in_words, (2,), jnp.uint32, key, jnp.asarray(data, jnp.uint32))


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
  return _host(lambda k: _draw(k, bit_width, shape), shape, _UINT[bit_width], key)


HOST_PHILOX = define_prng_impl(key_shape=(2,), seed=_seed, split=_split, fold_in=_fold_in,
                               random_bits=_random_bits, name='host_philox')


def host_key(key: jax.Array) -> jax.Array:
  """A `HOST_PHILOX` key derived from any key (typed or raw uint32 words); works under jit."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return jax.random.wrap_key_data(
      _host(_seed_words, (2,), jnp.uint32, key), impl=HOST_PHILOX)


# call_with_host_draws: the same draws from a program without host callbacks.

# Primitives whose inner program is inlined when it touches keys; the parameter holding it.
_CALLS = {'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr', 'remat2': 'jaxpr',
          'checkpoint': 'jaxpr', 'custom_jvp_call': 'call_jaxpr', 'custom_vjp_call': 'call_jaxpr'}


def _is_key(v) -> bool:
  dtype = getattr(v.aval, 'dtype', None)
  if dtype is None or not jnp.issubdtype(dtype, jax.dtypes.prng_key):
    return False
  if dtype._impl.name != 'host_philox':  # pylint: disable=protected-access
    raise ValueError(f'call_with_host_draws: the program uses a {dtype._impl.name} key; only '
                     'host_philox keys can be derived on the host')
  return True


def _each_key(f, words: np.ndarray, *data: np.ndarray) -> np.ndarray:
  """f(key words, *data) for every key of an array of keys (`words` [..., 2]), broadcast."""
  shape = np.broadcast_shapes(words.shape[:-1], *(d.shape for d in data))
  words = np.broadcast_to(words, shape + (2,))
  data = [np.broadcast_to(d, shape) for d in data]
  outs = [f(words[i], *(d[i] for d in data)) for i in np.ndindex(shape)]
  return np.stack(outs).reshape(shape + outs[0].shape)


def _broadcast_words(w: np.ndarray, p) -> np.ndarray:
  placed = [1] * len(p['shape'])
  for axis, dim in enumerate(p['broadcast_dimensions']):
    placed[dim] = w.shape[axis]
  return np.broadcast_to(w.reshape(*placed, 2), (*p['shape'], 2))


# Operations on key arrays, on their words [..., 2]: (words or data inputs, params) -> output.
_KEY_OPS = {
    'random_seed': lambda ins, p: np.reshape(
        [_seed_words(s) for s in ins[0].astype(np.uint32).ravel()], (*ins[0].shape, 2)),
    'random_split': lambda ins, p: _each_key(lambda k: _split_words(k, p['shape']), ins[0]),
    'random_fold_in': lambda ins, p: _each_key(_fold_in_words, ins[0], ins[1].astype(np.uint32)),
    'random_bits': lambda ins, p: _each_key(lambda k: _draw(k, p['bit_width'], p['shape']),
                                            ins[0]),
    'random_wrap': lambda ins, p: ins[0].astype(np.uint32),
    'random_unwrap': lambda ins, p: ins[0],
    'random_clone': lambda ins, p: ins[0],
    'slice': lambda ins, p: ins[0][tuple(
        slice(a, b, c) for a, b, c in zip(p['start_indices'], p['limit_indices'],
                                          p['strides'] or (1,) * len(p['start_indices'])))],
    'squeeze': lambda ins, p: np.squeeze(ins[0], axis=tuple(p['dimensions'])),
    'reshape': lambda ins, p: ins[0].reshape(*p['new_sizes'], 2),
    'broadcast_in_dim': lambda ins, p: _broadcast_words(ins[0], p),
    'concatenate': lambda ins, p: np.concatenate(ins, axis=p['dimension']),
}


def _live(jaxpr) -> list:
  """The equations that the outputs or an effect need, in order."""
  needed = {v for v in jaxpr.outvars if isinstance(v, jax.extend.core.Var)}
  live = []
  for e in reversed(jaxpr.eqns):
    if e.effects or any(v in needed for v in e.outvars):
      live.append(e)
      needed.update(v for v in e.invars if isinstance(v, jax.extend.core.Var))
  return live[::-1]


class _Pass:
  """One of two evaluations of a program that visit the same equations in the same order.

  Host pass (`replay` None): keys are their words (NumPy), every key operation runs on the
  host and each non-key value it makes (random bits, unwrapped words) is appended to
  `host_values`; nothing else is computed. Replay pass: key operations are skipped, each non-key
  value they made is taken from the iterator `replay`, everything else is bound as usual.
  """

  def __init__(self, replay=None):
    self.replay, self.host_values, self._touches = replay, [], {}

  def touches_keys(self, jaxpr) -> bool:
    if id(jaxpr) not in self._touches:  # the jaxprs outlive the pass, so ids are not reused
      self._touches[id(jaxpr)] = any(_is_key(v) for v in (*jaxpr.invars, *jaxpr.outvars)) or any(
          e.primitive.name.startswith('random_') or any(_is_key(v) for v in e.outvars)
          or any(self.touches_keys(j) for j in jax.extend.core.jaxprs_in_params(e.params))
          for e in jaxpr.eqns)
    return self._touches[id(jaxpr)]

  def run(self, jaxpr, consts, args) -> list:
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env.get(v)
    for e in _live(jaxpr):
      name, ins = e.primitive.name, [read(v) for v in e.invars]
      inner = e.params.get(_CALLS.get(name, ''))
      if inner is not None and self.touches_keys(getattr(inner, 'jaxpr', inner)):
        outs = self.run(getattr(inner, 'jaxpr', inner), getattr(inner, 'consts', ()), ins)
      elif name.startswith('random_') or any(_is_key(v) for v in (*e.invars, *e.outvars)):
        outs = self._key_op(e, ins)
      elif self.replay is None:
        outs = [None] * len(e.outvars)
      else:
        with e.ctx.manager:
          outs = e.primitive.bind(*ins, **e.primitive.get_bind_params(e.params))
        outs = outs if e.primitive.multiple_results else [outs]
      env.update(zip(e.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  def _key_op(self, e, ins) -> list:
    name = e.primitive.name
    if name not in _KEY_OPS:
      raise NotImplementedError(f'call_with_host_draws: no host version of {name} on keys')
    if self.replay is not None:
      return [None if _is_key(v) else next(self.replay) for v in e.outvars]
    if any(x is None for x in ins):
      raise ValueError(f'call_with_host_draws: {name} needs a value computed in the program; '
                       'keys must derive from the key argument and constants')
    outs = [_KEY_OPS[name]([np.asarray(x) for x in ins], e.params)]
    self.host_values.extend(x for v, x in zip(e.outvars, outs) if not _is_key(v))
    return outs


def call_with_host_draws(fn, key: jax.Array):
  """`jax.jit(fn)(host_key(key))` for a concrete `key`, with the same values, from a program
  without host callbacks (so JAX's persistent cache keeps it): the key derivations and random
  bits run in NumPy first and enter the program as arguments. `fn` must return no keys."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  words = _seed_words(np.asarray(key))
  abstract = jax.eval_shape(lambda: jax.random.wrap_key_data(jnp.zeros(2, jnp.uint32),
                                                             impl=HOST_PHILOX))
  closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(abstract)
  if any(_is_key(v) for v in closed.jaxpr.outvars):
    raise ValueError('call_with_host_draws: fn must not return keys')
  host = _Pass()
  host.run(closed.jaxpr, closed.consts, [words])

  def program(values):
    outs = _Pass(replay=iter(values)).run(closed.jaxpr, closed.consts, [None])
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return jax.jit(program)(host.host_values)
