"""A small CNN classifier trained on the bundled image sets, used as an offline feature extractor.

FID/KID/precision-recall need features; Inception-v3 needs a weights file users provide. For the
8x8 digits and 28x28 Fashion-MNIST this library instead trains a small classifier in seconds and
uses its penultimate layer (like Inception's pool3) as features. Images are NHWC in [-1, 1].
Saved as an export directory (params.npz + export.json with the network kwargs).

Training steps one jitted step at a time from the host. In a `lax.scan` the convolutions' filter
gradients run inside a loop body, where XLA:CPU is about 100x slower (jax-ml/jax#12868;
benchmarks/loop_body_convolution.py); docs/RESULTS.md gives the Fashion-MNIST figures.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from onestep_jax import xla_cpu
from onestep_jax.export_format import load_exported, save_export

_KIND = 'onestep_jax.eval.classifier'


class SmallCNN(nn.Module):
  """conv3x3 stride 1, then stride-2 conv3x3 per further width, ReLU, a hidden dense, logits."""

  num_classes: int  # number of output classes
  widths: Tuple[int, ...] = (16, 32, 32)  # channels of each conv; all but the first halve H, W
  feature_dim: int = 128  # width of the penultimate (feature) layer

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Returns (logits [N, num_classes], features [N, feature_dim])."""
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Conv(width, (3, 3), strides=1 if i == 0 else 2)(x))
    features = nn.relu(nn.Dense(self.feature_dim)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(features), features


class FeatureExtractor:
  """A trained `SmallCNN` for fixed-size NHWC images in [-1, 1]."""

  def __init__(self, params, *, num_classes: int, image_shape: Sequence[int],
               widths: Sequence[int] = (16, 32, 32), feature_dim: int = 128):
    self.params = params
    self.image_shape = tuple(int(d) for d in image_shape)
    self.net_kwargs = dict(num_classes=int(num_classes), widths=tuple(int(w) for w in widths),
                           feature_dim=int(feature_dim))
    self.module = SmallCNN(**self.net_kwargs)
    self._apply = xla_cpu.jit(self.module.apply)

  def _check(self, images) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1:] != self.image_shape:
      raise ValueError(f'images must have shape [N, {", ".join(map(str, self.image_shape))}] '
                       f'(NHWC in [-1, 1]), got shape {x.shape}')
    return x

  def _run(self, images, batch_size: int) -> Tuple[np.ndarray, np.ndarray]:
    x = self._check(images)
    outs = [self._apply(self.params, x[s:s + batch_size]) for s in range(0, len(x), batch_size)]
    return (np.concatenate([np.asarray(o[0]) for o in outs]),
            np.concatenate([np.asarray(o[1]) for o in outs]))

  def features(self, images, *, batch_size: int = 1024) -> np.ndarray:
    """Penultimate-layer activations, [N, feature_dim] float32."""
    return self._run(images, batch_size)[1]

  def logits(self, images, *, batch_size: int = 1024) -> np.ndarray:
    """Class logits, [N, num_classes] float32."""
    return self._run(images, batch_size)[0]

  def accuracy(self, images, labels, *, batch_size: int = 1024) -> float:
    """Fraction of images whose arg-max logit equals the label."""
    labels = np.asarray(labels)
    pred = self.logits(images, batch_size=batch_size).argmax(-1)
    if labels.shape != pred.shape:
      raise ValueError(f'labels must have shape {pred.shape}, got {labels.shape}')
    return float(np.mean(pred == labels))

  def save(self, directory: str) -> None:
    """Writes params.npz and export.json (network kwargs, image shape) to `directory`."""
    save_export(directory, self.params, net_kwargs=self.net_kwargs, fmt='npz',
                metadata={'kind': _KIND, 'image_shape': list(self.image_shape)})

  @classmethod
  def load(cls, directory: str) -> 'FeatureExtractor':
    """Reads a directory written by `save`."""
    exported = load_exported(directory)
    if exported.metadata.get('kind') != _KIND:
      raise ValueError(f'{os.fspath(directory)!r} holds an export of kind '
                       f'{exported.metadata.get("kind")!r}, not a {_KIND} feature extractor')
    params = jax.tree.map(jnp.asarray, exported.params)
    return cls(params, image_shape=exported.metadata['image_shape'], **exported.net_kwargs)


def _optimizer(learning_rate: float, weight_decay: float, steps: int):
  return optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=weight_decay)


@functools.partial(xla_cpu.jit, static_argnames=('net_kwargs', 'learning_rate', 'weight_decay',
                                                  'steps'))
def _init(images, key, *, net_kwargs, learning_rate, weight_decay, steps):
  """(params, optimizer state) and one key per training step."""
  init_key, loop_key = jax.random.split(key)
  params = SmallCNN(**dict(net_kwargs)).init(init_key, images[:1])
  opt_state = _optimizer(learning_rate, weight_decay, steps).init(params)
  return (params, opt_state), jax.random.split(loop_key, steps)


@functools.partial(xla_cpu.jit, donate_argnums=(0,),
                   static_argnames=('net_kwargs', 'learning_rate', 'weight_decay', 'steps',
                                    'batch_size'))
def _train_step(state, images, labels, key, *, net_kwargs, learning_rate, weight_decay, steps,
                batch_size):
  """One AdamW step on a minibatch drawn uniformly with replacement."""
  module = SmallCNN(**dict(net_kwargs))
  params, opt_state = state

  def loss_fn(p, x, y):
    logits, _ = module.apply(p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  idx = jax.random.randint(key, (batch_size,), 0, images.shape[0])
  grads = jax.grad(loss_fn)(params, images[idx], labels[idx])
  updates, opt_state = _optimizer(learning_rate, weight_decay, steps).update(grads, opt_state,
                                                                             params)
  return optax.apply_updates(params, updates), opt_state


def train_classifier(images, labels, *, num_classes: int, steps: int = 300, batch_size: int = 64,
                     seed: int = 0, learning_rate: float = 2e-3, weight_decay: float = 1e-4,
                     widths: Sequence[int] = (16, 32, 32),
                     feature_dim: int = 128) -> FeatureExtractor:
  """Trains a `SmallCNN` on NHWC images in [-1, 1] with integer labels; deterministic per seed.

  Minibatches are drawn uniformly with replacement; the loss is softmax cross-entropy; AdamW
  with the learning rate cosine-decayed to zero over `steps`, one jitted step at a time.
  """
  x = np.asarray(images, np.float32)
  y = np.asarray(labels)
  if x.ndim != 4 or x.shape[0] == 0:
    raise ValueError(f'images must have shape [N, H, W, C] with N >= 1, got shape {x.shape}')
  if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'labels must be integers of shape ({x.shape[0]},), got {y.dtype} of '
                     f'shape {y.shape}')
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f'labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]')
  if steps < 1 or batch_size < 1:
    raise ValueError(f'steps and batch_size must be positive, got {steps} and {batch_size}')
  net_kwargs = dict(num_classes=int(num_classes), widths=tuple(int(w) for w in widths),
                    feature_dim=int(feature_dim))
  hyper = dict(net_kwargs=tuple(sorted(net_kwargs.items())), learning_rate=float(learning_rate),
               weight_decay=float(weight_decay), steps=int(steps))
  images, labels = jnp.asarray(x), jnp.asarray(y, jnp.int32)
  state, keys = _init(images, jax.random.key(seed), **hyper)
  for key in keys:  # a host loop, not a lax.scan: see the module docstring
    state = _train_step(state, images, labels, key, batch_size=int(batch_size), **hyper)
  return FeatureExtractor(state[0], image_shape=x.shape[1:], **net_kwargs)
