"""Teacher losses and Diff-Instruct's surrogate against closed forms on Gaussians."""
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.losses.denoising import edm_denoising_loss, edm_loss_weight, flow_matching_loss
from onestep_jax.losses.diff_instruct import diff_instruct_generator_loss


def test_edm_loss_of_exact_denoiser_is_posterior_variance():
  # For x0 ~ N(0, s^2 I_d), E||D*(x_t) - x0||^2 = d s^2 sigma^2 / (s^2 + sigma^2) (posterior variance).
  s, d, sigma = 0.8, 3, 0.6
  gm = GaussianMixture.isotropic(means=np.zeros((1, d)), std=s)
  key0, key1 = jax.random.split(jax.random.PRNGKey(0))
  x0 = gm.sample(key0, 200_000)
  noise = jax.random.normal(key1, x0.shape)
  sig = jnp.full((x0.shape[0],), sigma)
  loss = edm_denoising_loss(denoiser=lambda x, sg, _: gm.denoise(x, sg), x0=x0, sigma=sig,
                            noise=noise)
  expected = edm_loss_weight(sigma) * d * s**2 * sigma**2 / (s**2 + sigma**2)
  np.testing.assert_allclose(float(loss.mean()), expected, rtol=0.01)


def test_flow_matching_loss_is_zero_on_deterministic_pairs_only_for_the_true_velocity():
  x0 = jnp.ones((4, 2))
  noise = jnp.zeros((4, 2))
  t = jnp.linspace(0.1, 0.9, 4)
  exact = flow_matching_loss(velocity_fn=lambda x, t, _: -jnp.ones_like(x), x0=x0, t=t, noise=noise)
  wrong = flow_matching_loss(velocity_fn=lambda x, t, _: jnp.zeros_like(x), x0=x0, t=t, noise=noise)
  np.testing.assert_allclose(exact, 0.0)
  np.testing.assert_allclose(wrong, 2.0)


def test_diff_instruct_gradient_equals_weighted_kl_gradient():
  # Generator x_g = mu + z; teacher N(0, I); fake score exact for N(mu, I). Then
  # d/dmu E[loss] = sigma^2 d/dmu KL(N(mu, 1+sigma^2) || N(0, 1+sigma^2)) = mu sigma^2/(1+sigma^2).
  d, n, sigma = 2, 100_000, 1.3
  mu = jnp.array([0.7, -0.4])
  teacher = GaussianMixture.isotropic(means=np.zeros((1, d)), std=1.0)
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  z = jax.random.normal(k1, (n, d))
  noise = jax.random.normal(k2, (n, d))
  sig = jnp.full((n,), sigma)

  fake = GaussianMixture.isotropic(means=np.asarray(mu)[None], std=1.0)  # the fake score of q_mu

  def surrogate(m):
    return diff_instruct_generator_loss(
        x_g=m + z, sigma=sig, noise=noise, labels=None,
        teacher_denoiser=lambda x, s, _: teacher.denoise(x, s),
        fake_denoiser=lambda x, s, _: fake.denoise(x, s)).mean()

  grad = jax.grad(surrogate)(mu)
  np.testing.assert_allclose(grad, mu * sigma**2 / (1 + sigma**2), rtol=1e-4, atol=1e-5)


def test_diff_instruct_injects_the_score_difference_through_samples_only():
  x_g = jnp.arange(6.0).reshape(3, 2)
  sigma = jnp.array([0.5, 1.0, 2.0])
  noise = jnp.ones_like(x_g)
  teacher = lambda x, s, _: 0.5 * x
  fake = lambda x, s, _: x**2
  grad = jax.grad(lambda x: diff_instruct_generator_loss(
      x_g=x, sigma=sigma, noise=noise, teacher_denoiser=teacher, fake_denoiser=fake).sum())(x_g)
  x_t = x_g + sigma[:, None] * noise
  np.testing.assert_allclose(grad, x_t**2 - 0.5 * x_t, rtol=1e-6)
