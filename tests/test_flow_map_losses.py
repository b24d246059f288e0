"""AYF-EMD and AYF-LMD: the continuous-time losses are the limits of their discrete versions, EMD
tends to flow matching as s -> t, the tangent normalisation and warm-up act as documented."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.diffusion import flow_maps
from onestep_jax.losses.flow_map import (ayf_emd_loss, ayf_lmd_loss, directional_derivative,
                                         normalize_tangent)

_MIXTURE = GaussianMixture.isotropic(means=[[-1.0, 0.5, 0.0], [1.0, -0.5, 0.3]], std=[0.3, 0.5])
TEACHER = flow_maps.teacher_velocity(lambda x, sigma, labels=None: _MIXTURE.denoise(x, sigma))


def student(theta):
  """A smooth average velocity F_theta(x, t, s) in plain jnp (no time-embedding cut-offs), so
  that its limits can be checked in float64."""
  def F(x, t, s, labels=None):
    h = jnp.tanh(x @ theta['w'] + theta['a'] * t[:, None] + theta['b'] * s[:, None] + theta['c'])
    return h @ theta['u'] + theta['d'] * x
  return F


def _theta(key, d=3, h=8):
  k = jax.random.split(key, 6)
  return {'w': jax.random.normal(k[0], (d, h)) / 2, 'a': jax.random.normal(k[1], (h,)),
          'b': jax.random.normal(k[2], (h,)), 'c': jax.random.normal(k[3], (h,)),
          'u': jax.random.normal(k[4], (h, d)) / 3, 'd': jax.random.normal(k[5], ())}


def _batch(key, b=6, d=3):
  k1, k2, k3 = jax.random.split(key, 3)
  t, s = flow_maps.sample_times(k1, b)
  x0 = _MIXTURE.sample(k2, b)
  return (1 - t[:, None]) * x0 + t[:, None] * jax.random.normal(k3, (b, d)), t, s


def _flat(tree):
  return jnp.concatenate([jnp.ravel(l) for l in jax.tree.leaves(tree)])


def _grad(loss_fn, theta):
  return _flat(jax.grad(lambda th: jnp.sum(loss_fn(student(th))))(theta))


class FlowMapLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_emd_is_the_limit_of_the_discrete_eulerian_loss(self):
    with jax.enable_x64(True):
      theta = jax.tree.map(lambda l: l.astype(jnp.float64), _theta(jax.random.PRNGKey(0)))
      x_t, t, s = jax.tree.map(lambda l: l.astype(jnp.float64), _batch(jax.random.PRNGKey(1)))
      dt = 1e-5

      def discrete(F):
        # ||f(x_t, t, s) - sg f(x_t', t', s)||^2 / (2 dt), x_t' one Euler step of the teacher.
        x_prev = flow_maps.euler_step(TEACHER, x_t, t, t - dt)
        target = jax.lax.stop_gradient(flow_maps.flow_map(F)(x_prev, t - dt, s))
        return 0.5 * jnp.sum((flow_maps.flow_map(F)(x_t, t, s) - target)**2, -1) / dt

      emd = lambda F: ayf_emd_loss(average_velocity=F, teacher_velocity=TEACHER, x_t=x_t, t=t,
                                   s=s, c=None)
      g_emd, g_discrete = self.variant(lambda th: (_grad(emd, th), _grad(discrete, th)))(theta)
      assert float(jnp.linalg.norm(g_emd)) > 1e-2
      np.testing.assert_allclose(g_emd, g_discrete, rtol=1e-3, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_lmd_is_the_limit_of_the_discrete_lagrangian_loss(self):
    with jax.enable_x64(True):
      theta = jax.tree.map(lambda l: l.astype(jnp.float64), _theta(jax.random.PRNGKey(2)))
      x_t, t, s = jax.tree.map(lambda l: l.astype(jnp.float64), _batch(jax.random.PRNGKey(3)))
      ds = 1e-5

      def discrete(F):
        # The map's end point one teacher step back from s + ds.
        later = flow_maps.flow_map(F)(x_t, t, s + ds)
        target = jax.lax.stop_gradient(flow_maps.euler_step(TEACHER, later, s + ds, s))
        return 0.5 * jnp.sum((flow_maps.flow_map(F)(x_t, t, s) - target)**2, -1) / ds

      lmd = lambda F: ayf_lmd_loss(average_velocity=F, teacher_velocity=TEACHER, x_t=x_t, t=t,
                                   s=s, c=None)
      g_lmd, g_discrete = self.variant(lambda th: (_grad(lmd, th), _grad(discrete, th)))(theta)
      assert float(jnp.linalg.norm(g_lmd)) > 1e-2
      np.testing.assert_allclose(g_lmd, g_discrete, rtol=1e-3, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_both_tend_to_flow_matching_as_s_approaches_t(self):
    with jax.enable_x64(True):
      theta = jax.tree.map(lambda l: l.astype(jnp.float64), _theta(jax.random.PRNGKey(4)))
      x_t, t, _ = jax.tree.map(lambda l: l.astype(jnp.float64), _batch(jax.random.PRNGKey(5)))
      gap = 1e-6
      fm = lambda F: 0.5 * jnp.sum((F(x_t, t, t) - TEACHER(x_t, t))**2, -1)
      kw = dict(teacher_velocity=TEACHER, x_t=x_t, t=t, s=t - gap, c=None)
      grads = lambda th: (_grad(fm, th),
                          _grad(lambda F: ayf_emd_loss(average_velocity=F, **kw), th) / gap,
                          _grad(lambda F: ayf_lmd_loss(average_velocity=F, **kw), th) / gap)
      g_fm, g_emd, g_lmd = self.variant(grads)(theta)
      assert float(jnp.linalg.norm(g_fm)) > 1e-2
      np.testing.assert_allclose(g_emd, g_fm, rtol=1e-4, atol=1e-6)
      np.testing.assert_allclose(g_lmd, g_fm, rtol=1e-4, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_on_the_map_is_the_normalised_warmed_up_tangent(self):
    theta = _theta(jax.random.PRNGKey(6))
    x_t, t, s = _batch(jax.random.PRNGKey(7))
    F = student(theta)
    r, c = 0.3, 0.1

    def grad_on_map(loss_fn):
      # d loss / d f with f = x_t + (s - t) F: perturb F by e and divide by (s - t).
      delta = lambda e: loss_fn(lambda x, tt, ss, labels=None: F(x, tt, ss) + e).sum()
      return jax.grad(delta)(jnp.zeros_like(x_t)) / (s - t)[:, None]

    kw = dict(teacher_velocity=TEACHER, x_t=x_t, t=t, s=s, r=r, c=c)
    g_emd, g_lmd = self.variant(lambda: (
        grad_on_map(lambda G: ayf_emd_loss(average_velocity=G, **kw)),
        grad_on_map(lambda G: ayf_lmd_loss(average_velocity=G, **kw))))()
    v = TEACHER(x_t, t)
    f_avg, dt_f = jax.jvp(lambda x, tt: F(x, tt, s), (x_t, t), (v, jnp.ones_like(t)))
    expected = (v - f_avg) + r * (s - t)[:, None] * dt_f
    expected = expected / (jnp.linalg.norm(expected, axis=-1, keepdims=True) + c)
    np.testing.assert_allclose(g_emd, expected, rtol=2e-4, atol=1e-6)
    end = x_t + (s - t)[:, None] * f_avg
    _, ds_f = jax.jvp(lambda ss: F(x_t, t, ss), (s,), (jnp.ones_like(s),))
    expected = (TEACHER(end, s) - f_avg) - r * (s - t)[:, None] * ds_f
    expected = expected / (jnp.linalg.norm(expected, axis=-1, keepdims=True) + c)
    np.testing.assert_allclose(g_lmd, expected, rtol=2e-4, atol=1e-6)
    assert np.all(np.linalg.norm(g_emd, axis=-1) < 1.0)  # normalised

  def test_normalize_tangent_and_bad_inputs(self):
    g = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalize_tangent(g, 1.0), [[0.5, 4 / 6], [0.0, 0.0]])
    np.testing.assert_array_equal(normalize_tangent(g, None), g)
    x_t, t, s = _batch(jax.random.PRNGKey(8))
    F = student(_theta(jax.random.PRNGKey(9)))
    with self.assertRaises(AssertionError):
      ayf_emd_loss(average_velocity=F, teacher_velocity=TEACHER, x_t=x_t, t=t[:3], s=s)
    with self.assertRaises(ValueError):
      directional_derivative(lambda x: x, (x_t,), (x_t,), tangent='adjoint')
