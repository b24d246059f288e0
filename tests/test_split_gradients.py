"""split_gradients: one forward pass whose two copies carry the parameters' and the input's
gradients separately, equal to two stop-gradient passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.methods.split_gradients import split_gradients


def _net(params, x, sigma, labels):
  h = jnp.tanh(x @ params['w'] / sigma[:, None] + labels @ params['emb'])
  return h @ params['v']


def _inputs():
  k = jax.random.split(jax.random.PRNGKey(0), 5)
  params = {'w': jax.random.normal(k[0], (3, 8)), 'emb': jax.random.normal(k[1], (4, 8)),
            'v': jax.random.normal(k[2], (8, 3))}
  x = jax.random.normal(k[3], (5, 3))
  sigma = jnp.linspace(0.5, 2.0, 5)
  labels = jax.nn.one_hot(jax.random.randint(k[4], (5,), 0, 4), 4)
  return params, x, sigma, labels


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('read_input', ['through the input', 'under stop-gradient'])
def test_each_copy_carries_only_its_own_gradient(jit, read_input):
  params, x, sigma, labels = _inputs()
  sg = jax.lax.stop_gradient

  def second(y):  # the generator-side loss
    y = y if read_input == 'through the input' else sg(y)
    return jnp.sum(jnp.sin(y) * x)

  def split(params, x):
    y_params, y_input = split_gradients(_net, params, x, sigma, labels)
    return jnp.sum((y_params - 1.0) ** 2) + second(y_input)

  def two_passes(params, x):
    return (jnp.sum((_net(params, sg(x), sigma, labels) - 1.0) ** 2)
            + second(_net(sg(params), x, sigma, labels)))

  grad = jax.grad(split, argnums=(0, 1))
  grad = jax.jit(grad) if jit else grad
  got, want = grad(params, x), jax.grad(two_passes, argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(split(params, x), two_passes(params, x), rtol=1e-6)
