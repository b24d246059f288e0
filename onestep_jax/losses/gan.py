"""GAN losses on discriminator logits, per example (as used by DMD2, arXiv 2405.14867), the
relativistic pairing losses and R1/R2 gradient penalties of R3GAN (Huang et al. 2024, arXiv
2501.05441) used by AYF's adversarial finetuning (arXiv 2506.14603).

Logits have shape [B] or [B, ...] (e.g. one logit per patch); extra axes are averaged, so every
loss returns shape [B] and the caller reduces.
"""
from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from onestep_jax.losses.common import mean_per_example, sum_per_example

_GENERATOR_KINDS = ('non_saturating', 'hinge')
_DISCRIMINATOR_KINDS = ('logistic', 'hinge')


def _per_example(v: jnp.ndarray) -> jnp.ndarray:
  return v if v.ndim == 1 else mean_per_example(v)


def gan_generator_loss(*, fake_logits: jnp.ndarray, kind: str = 'non_saturating') -> jnp.ndarray:
  """Generator loss, per example [B].

  'non_saturating': softplus(-l) = -log sigmoid(l) (Goodfellow et al. 2014, arXiv 1406.2661,
  Sec. 3); 'hinge': -l (Lim & Ye 2017, arXiv 1705.02894). Both decrease as the fake logits l grow.
  """
  if kind not in _GENERATOR_KINDS:
    raise ValueError(f'unknown generator loss {kind!r}; choose one of {_GENERATOR_KINDS}')
  chex.assert_rank(fake_logits, {1, 2, 3, 4})
  if kind == 'non_saturating':
    return _per_example(jax.nn.softplus(-fake_logits))
  return _per_example(-fake_logits)


def gan_discriminator_loss(*, real_logits: jnp.ndarray, fake_logits: jnp.ndarray,
                           kind: str = 'logistic') -> jnp.ndarray:
  """Discriminator loss, per example [B]; the i-th real and i-th fake logits are paired.

  'logistic': softplus(l_fake) + softplus(-l_real), the binary cross-entropy with real = 1
  (arXiv 1406.2661; DMD2's discriminator loss); 'hinge': relu(1 - l_real) + relu(1 + l_fake)
  (arXiv 1705.02894).
  """
  if kind not in _DISCRIMINATOR_KINDS:
    raise ValueError(f'unknown discriminator loss {kind!r}; choose one of {_DISCRIMINATOR_KINDS}')
  chex.assert_rank(real_logits, {1, 2, 3, 4})
  chex.assert_equal_shape([real_logits, fake_logits])
  if kind == 'logistic':
    return _per_example(jax.nn.softplus(fake_logits)) + _per_example(jax.nn.softplus(-real_logits))
  return _per_example(jax.nn.relu(1.0 - real_logits)) + _per_example(jax.nn.relu(1.0 + fake_logits))


def _relativistic_check(real_logits, fake_logits):
  chex.assert_rank(real_logits, {1, 2, 3, 4})
  chex.assert_equal_shape([real_logits, fake_logits])


def relativistic_discriminator_loss(*, real_logits: jnp.ndarray,
                                    fake_logits: jnp.ndarray) -> jnp.ndarray:
  """Relativistic pairing discriminator loss softplus(D(fake) - D(real)), per example [B]
  (RpGAN, Jolicoeur-Martineau 2018, arXiv 1807.00734; R3GAN's loss, arXiv 2501.05441); the i-th
  real and i-th fake logits form a pair. It depends on the logits only through their difference."""
  _relativistic_check(real_logits, fake_logits)
  return _per_example(jax.nn.softplus(fake_logits - real_logits))


def relativistic_generator_loss(*, real_logits: jnp.ndarray,
                                fake_logits: jnp.ndarray) -> jnp.ndarray:
  """Relativistic pairing generator loss softplus(D(real) - D(fake)), per example [B] (arXiv
  2501.05441): the discriminator loss with real and fake exchanged."""
  _relativistic_check(real_logits, fake_logits)
  return _per_example(jax.nn.softplus(real_logits - fake_logits))


def gradient_penalty(*, discriminator: Callable[[jnp.ndarray], jnp.ndarray],
                     x: jnp.ndarray) -> jnp.ndarray:
  """||grad_x D(x)||^2 per example [B]: R1 on real samples, R2 on fake ones (Mescheder et al.
  2018, arXiv 1801.04406; R3GAN adds both with weight gamma / 2, arXiv 2501.05441).

  `discriminator` maps inputs [B, ...] to logits [B] with example i depending on input i only
  (no batch statistics), so one backward pass of sum_i D(x)_i gives every example's gradient.
  The penalty is differentiable in the discriminator's parameters (a double backward).
  """
  chex.assert_rank(x, {2, 3, 4, 5})
  logits, pullback = jax.vjp(discriminator, x)
  chex.assert_shape(logits, (x.shape[0],))
  (grad,) = pullback(jnp.ones_like(logits))
  return sum_per_example(jnp.square(grad))
