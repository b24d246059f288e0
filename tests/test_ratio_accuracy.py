"""benchmarks/ratio_accuracy.py: the student's Monte-Carlo noised density and denoiser are those
of the distribution they stand for."""

import jax
import jax.numpy as jnp
import numpy as np

from train_helpers.scripts import load_script

ratio_accuracy = load_script('benchmarks/ratio_accuracy.py')


def test_student_marginal_of_gaussian_samples_is_the_wider_gaussian():
  """Centres drawn from N(m, s0^2 I) give log q_sigma = log N(x; m, (s0^2 + sigma^2) I) and the
  denoiser m + s0^2 / (s0^2 + sigma^2) (x - m) up to the Monte-Carlo error, in 2 and 3
  dimensions, across chunk boundaries."""
  for dim in (2, 3):
    k_c, k_x = jax.random.split(jax.random.PRNGKey(dim))
    mean, s0, sigma = 0.3, 0.5, 0.4
    centres = mean + s0 * jax.random.normal(k_c, (100_000, dim))
    x = mean + 0.5 * jax.random.normal(k_x, (700, dim))  # where q has most of its mass
    got, denoised = ratio_accuracy.student_marginal(x, centres, sigma, chunk=256)
    var = s0**2 + sigma**2
    want = -jnp.sum((x - mean)**2, -1) / (2 * var) - 0.5 * dim * jnp.log(2 * jnp.pi * var)
    assert got.shape == (700,)
    np.testing.assert_allclose(got, want, atol=0.05)
    np.testing.assert_allclose(denoised, mean + s0**2 / var * (x - mean), atol=0.02)
