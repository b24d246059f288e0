"""Few-step flow-map sampling: exact maps compose on any grid, gamma-sampling keeps the exact
marginals, gamma = 1 is consistency-model multistep sampling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.diffusion import flow_maps

C = 0.5


def exact_average_velocity(x, t, s, labels=None):
  return (flow_maps.gaussian_flow_map(x, t, s, C) - x) / (s - t)[:, None]


def test_exact_map_gives_the_same_sample_on_any_grid():
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
  one = flow_maps.sample(exact_average_velocity, x, times=flow_maps.time_grid(1, t_max=0.98))
  for times in (flow_maps.time_grid(8, t_max=0.98), jnp.array([0.98, 0.9, 0.3, 0.29, 0.0])):
    np.testing.assert_allclose(flow_maps.sample(exact_average_velocity, x, times=times), one,
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(one, flow_maps.gaussian_flow_map(x, jnp.full((16,), 0.98),
                                                              jnp.zeros((16,)), C), rtol=1e-6)


@pytest.mark.parametrize('gamma', [0.0, 0.5, 1.0])
def test_gamma_sampling_keeps_the_exact_marginal(gamma):
  """Started from the exact marginal at t_max, every gamma ends with std C (a wrong re-noising
  std or jump time would not)."""
  n, t_max = 40_000, 0.95
  x = flow_maps.gaussian_marginal_std(t_max, C) * jax.random.normal(jax.random.PRNGKey(1), (n, 1))
  out = jax.jit(lambda x, k: flow_maps.sample(exact_average_velocity, x, gamma=gamma, key=k,
                                              times=flow_maps.time_grid(4, t_max=t_max)))(
      x, jax.random.PRNGKey(2))
  np.testing.assert_allclose(float(jnp.std(out)), C, rtol=2e-2)
  if gamma > 0:  # fresh noise: no longer a deterministic function of x
    assert float(jnp.abs(jnp.corrcoef(out[:, 0], x[:, 0])[0, 1])) < 0.99


def test_gamma_one_is_consistency_multistep_sampling():
  """Denoise fully to 0, re-noise to the next time with fresh noise, repeat."""
  F = lambda x, t, s, labels=None: jnp.sin(x) * (1 + t - s)[:, None]
  f = flow_maps.flow_map(F)
  x = jax.random.normal(jax.random.PRNGKey(3), (8, 2))
  times = jnp.array([0.9, 0.6, 0.2, 0.0])
  key = jax.random.PRNGKey(4)
  got = flow_maps.sample(F, x, times=times, gamma=1.0, key=key)
  keys = jax.random.split(key, 3)
  expected = x
  zero = jnp.zeros((8,))
  for i in range(3):
    expected = f(expected, jnp.full((8,), times[i]), zero)
    if i < 2:
      t = times[i + 1]
      expected = (1 - t) * expected + t * jax.random.normal(keys[i], x.shape)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_gamma_time_and_input_checks():
  np.testing.assert_allclose(flow_maps.gamma_time(jnp.array(0.5), 0.0), 0.5, rtol=1e-6)
  np.testing.assert_allclose(flow_maps.gamma_time(jnp.array(0.5), 1.0), 0.0, atol=1e-7)
  grid = flow_maps.time_grid(4, t_max=0.8)
  np.testing.assert_allclose(grid, [0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-7)
  x = jnp.zeros((2, 2))
  with pytest.raises(ValueError, match='key'):
    flow_maps.sample(exact_average_velocity, x, times=grid, gamma=0.5)
  with pytest.raises(ValueError, match='gamma'):
    flow_maps.sample(exact_average_velocity, x, times=grid, gamma=2.0)
  with pytest.raises(ValueError, match='num_steps'):
    flow_maps.time_grid(0)


@pytest.mark.parametrize('gamma,steps', [(0.0, 1), (0.0, 3), (0.5, 3)])
def test_unrolled_sampling_equals_the_loop_and_compiles_without_one(gamma, steps):
  """unroll=True (for differentiated samples: XLA:CPU's convolution gradients are slow in loop
  bodies) gives the loop's samples and gradients, and its gradient traces no loop (XLA removes a
  one-step loop around this tiny map by itself, but not around the U-Net)."""
  x = jax.random.normal(jax.random.PRNGKey(3), (8, 2))
  key = jax.random.PRNGKey(4)
  times = flow_maps.time_grid(steps, t_max=0.98)

  def loss(scale, unroll):
    velocity = lambda x, t, s, labels=None: scale * exact_average_velocity(x, t, s)
    return jnp.sum(flow_maps.sample(velocity, x, times=times, gamma=gamma, key=key,
                                    unroll=unroll) ** 2)

  grad = {u: jax.jit(jax.value_and_grad(loss), static_argnums=1) for u in (False, True)}
  np.testing.assert_allclose(grad[True](1.1, True), grad[False](1.1, False), rtol=1e-6)
  jaxpr = {u: str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(1.1, u)) for u in (False, True)}
  assert 'scan[' in jaxpr[False] and 'scan[' not in jaxpr[True]
