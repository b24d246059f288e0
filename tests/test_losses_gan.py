"""GAN generator and discriminator losses: hand-computed values, identities and gradient signs."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.losses.gan import gan_discriminator_loss, gan_generator_loss

LOGITS = jnp.array([0.0, 2.0, -1.0])


class GanLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_by_hand(self):
    ns = self.variant(lambda l: gan_generator_loss(fake_logits=l))(LOGITS)
    # -log sigmoid(l) = log(1 + exp(-l)).
    np.testing.assert_allclose(ns, [math.log(2.0), math.log(1 + math.exp(-2.0)),
                                    math.log(1 + math.e)], rtol=1e-6)
    hinge_g = self.variant(lambda l: gan_generator_loss(fake_logits=l, kind='hinge'))(LOGITS)
    np.testing.assert_allclose(hinge_g, [0.0, -2.0, 1.0])
    real = jnp.array([0.5, 2.0, -1.0])
    fake = jnp.array([0.0, -2.0, 1.0])
    logistic = self.variant(lambda r, f: gan_discriminator_loss(real_logits=r,
                                                                fake_logits=f))(real, fake)
    sp = lambda v: math.log1p(math.exp(v))
    np.testing.assert_allclose(logistic, [sp(0.0) + sp(-0.5), sp(-2.0) + sp(-2.0),
                                          sp(1.0) + sp(1.0)], rtol=1e-6)
    hinge_d = self.variant(lambda r, f: gan_discriminator_loss(real_logits=r, fake_logits=f,
                                                               kind='hinge'))(real, fake)
    # relu(1 - l_real) + relu(1 + l_fake).
    np.testing.assert_allclose(hinge_d, [1.5, 0.0, 4.0])

  @chex.variants(with_jit=True, without_jit=True)
  def test_logistic_and_non_saturating_relation(self):
    # softplus(l) - softplus(-l) = l, so with real = fake = l the logistic discriminator loss
    # softplus(l) + softplus(-l) equals twice the non-saturating generator loss plus l; and the
    # non-saturating loss is the cross-entropy of labelling the fakes real: -log sigmoid(l).
    l = jnp.linspace(-6.0, 6.0, 13)
    d, g = self.variant(lambda v: (gan_discriminator_loss(real_logits=v, fake_logits=v),
                                   gan_generator_loss(fake_logits=v)))(l)
    np.testing.assert_allclose(d - 2.0 * g, l, atol=1e-5)
    np.testing.assert_allclose(g, np.log1p(np.exp(-np.asarray(l, np.float64))), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_signs(self):
    l = jnp.linspace(-3.0, 3.0, 7)
    for kind in ('non_saturating', 'hinge'):
      g = self.variant(jax.grad(lambda v: gan_generator_loss(fake_logits=v, kind=kind).sum()))(l)
      assert np.all(np.asarray(g) < 0), kind  # descending the loss raises the fake logits
    g_ns = self.variant(jax.grad(lambda v: gan_generator_loss(fake_logits=v).sum()))(l)
    np.testing.assert_allclose(g_ns, -jax.nn.sigmoid(-l), rtol=1e-6)  # non-saturating: -sigmoid(-l)
    g_real, g_fake = self.variant(jax.grad(
        lambda r, f: gan_discriminator_loss(real_logits=r, fake_logits=f).sum(),
        argnums=(0, 1)))(l, l)
    # The discriminator raises real logits and lowers fake ones.
    assert np.all(np.asarray(g_real) < 0) and np.all(np.asarray(g_fake) > 0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_patch_logits_are_averaged_per_example(self):
    patches = jnp.arange(12.0).reshape(2, 3, 2) / 4.0 - 1.0
    per_example = self.variant(lambda p: gan_generator_loss(fake_logits=p))(patches)
    chex.assert_shape(per_example, (2,))
    np.testing.assert_allclose(per_example,
                               np.mean(np.log1p(np.exp(-np.asarray(patches))), axis=(1, 2)),
                               rtol=1e-6)

  def test_bad_inputs_raise(self):
    with self.assertRaises(ValueError):
      gan_generator_loss(fake_logits=LOGITS, kind='wasserstein')
    with self.assertRaises(ValueError):
      gan_discriminator_loss(real_logits=LOGITS, fake_logits=LOGITS, kind='non_saturating')
    with self.assertRaises(AssertionError):
      gan_discriminator_loss(real_logits=LOGITS, fake_logits=LOGITS[:2])
    with self.assertRaises(AssertionError):
      gan_generator_loss(fake_logits=jnp.float32(1.0))
