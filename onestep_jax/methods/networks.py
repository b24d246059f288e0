"""Networks by name: building, initialising and applying them; labels for batches."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from onestep_jax.nets.host_rng import call_with_host_draws, host_key
from onestep_jax.nets.mlp import MLP


def _song_unet(**kw):
  from onestep_jax.nets.song_unet import SongUNet
  return SongUNet(**kw)


def _dhariwal_unet(**kw):
  from onestep_jax.nets.dhariwal_unet import DhariwalUNet
  return DhariwalUNet(**kw)


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    'mlp': MLP,
    'song_unet': _song_unet,
    'dhariwal_unet': _dhariwal_unet,
}


def build_network(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
  """The Flax module `name` built with `kwargs`; unknown names list the valid ones."""
  if name not in NETWORKS:
    raise ValueError(f'unknown network {name!r}; valid networks: {sorted(NETWORKS)}')
  try:
    return NETWORKS[name](**dict(kwargs))
  except TypeError as e:
    raise ValueError(f'bad settings for network {name!r}: {e}') from None


def init_network(module: nn.Module, key: jax.Array, *, example_shape, num_classes: int,
                 second_time: bool = False) -> Any:
  """Fresh parameters of `module`, initialised in one compiled call whose random draws are
  made on the host (`host_rng.HOST_PHILOX`, derived from `key`): with threefry keys the compile
  took 13-18 s for a U-Net, one kernel per parameter; eager init compiles every draw
  separately. For a concrete `key` the draws enter as arguments (`call_with_host_draws`), so the
  program has no host callbacks and a warm start loads it from the persistent cache. Deterministic
  in `key`, the same under a trace. `second_time=True` also creates the (zero-initialised)
  embedding of the flow maps' second time."""
  x = jnp.zeros((1,) + tuple(example_shape), jnp.float32)
  labels = jnp.zeros((1, num_classes), jnp.float32) if num_classes else None
  inputs = {'second_time_labels': jnp.zeros((1,), jnp.float32)} if second_time else {}

  def init(k):
    k_params, k_drop = jax.random.split(k)
    rngs = {'params': k_params, 'dropout': k_drop, 'label_dropout': k_drop}
    return module.init(rngs, x, jnp.zeros((1,), jnp.float32), labels, **inputs)['params']

  if isinstance(key, jax.core.Tracer):
    return init(host_key(key))
  return call_with_host_draws(init, key)


def network_fn(module: nn.Module, params: Any, *, train: bool = False,
               rng: Optional[jax.Array] = None, return_features: bool = False) -> Callable:
  """F(x, noise_labels, labels, **inputs): the module applied to `params`; `inputs` are extra
  keyword inputs of the module (e.g. the flow maps' `second_time_labels`).

  With `train=True`, `rng` feeds dropout and label dropout; with `return_features=True` the
  module returns (output, features) (see the networks' docstrings for which features).
  """
  rngs = None
  if train:
    r1, r2 = jax.random.split(rng)
    rngs = {'dropout': r1, 'label_dropout': r2}
  extra = {'return_features': True} if return_features else {}

  def apply(x, noise_labels, labels=None, **inputs):
    return module.apply({'params': params}, x, noise_labels, labels, train=train, rngs=rngs,
                        **extra, **inputs)

  return apply


def example_shape(name: str, kwargs: Mapping[str, Any]) -> tuple[int, ...]:
  """The shape of one example network `name` with `kwargs` takes: (data_dim,) or (H, W, C)."""
  if name == 'mlp':
    return (int(kwargs['data_dim']),)
  side = int(kwargs['img_resolution'])
  return (side, side, int(kwargs['in_channels']))


def one_hot_labels(batch: Mapping[str, Any], num_classes: int) -> Optional[jnp.ndarray]:
  """One-hot labels [B, C] from a batch's integer 'label', or None for unconditional data."""
  if not num_classes:
    return None
  return jax.nn.one_hot(batch['label'], num_classes, dtype=jnp.float32)


def random_labels(key: jax.Array, num: int, num_classes: int) -> Optional[jnp.ndarray]:
  """Uniformly drawn one-hot labels for sampling, or None when unconditional."""
  if not num_classes:
    return None
  return jax.nn.one_hot(jax.random.randint(key, (num,), 0, num_classes), num_classes)


def init_feature_head(head: nn.Module, net, backbone, key: jax.Array, *, example_shape,
                      num_classes: int) -> Any:
  """Fresh parameters of a discriminator `head` over the features of `net` (a NetworkDenoiser)
  with parameters `backbone` (DMD2's head on the U-Net bottleneck or the MLP's last layer)."""
  x = jnp.zeros((1,) + tuple(example_shape), jnp.float32)
  labels = jnp.zeros((1, num_classes), jnp.float32) if num_classes else None
  feats = jax.eval_shape(lambda p: net.features(p, x, jnp.ones((1,)), labels), backbone)
  return jax.jit(head.init)(key, jnp.zeros(feats.shape, feats.dtype), labels)['params']
