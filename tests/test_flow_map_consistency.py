"""Closed forms for Gaussian data, which are fixed points of every few-step loss; sCD against
AYF-EMD at s = 0; sCD's weighting; discrete CD; PD's target."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.data.gaussian_mixture import GaussianMixture
from onestep_jax.diffusion import flow_maps
from onestep_jax.losses.consistency import consistency_distillation_loss, scd_loss
from onestep_jax.losses.flow_map import ayf_emd_loss, ayf_lmd_loss
from onestep_jax.losses.progressive import progressive_distillation_loss

C = 0.6  # data N(0, C^2 I)
D = 3
GAUSS = GaussianMixture.isotropic(means=[[0.0] * D], std=[C])
GAUSS_DENOISER = lambda x, sigma, labels=None: GAUSS.denoise(x, sigma)


def _perturbed_map(theta):
  """F = F* + theta h: the exact average velocity of N(0, C^2 I) plus a smooth perturbation."""
  def F(x, t, s, labels=None):
    exact = (flow_maps.gaussian_flow_map(x, t, s, C) - x) / (s - t)[:, None]
    return exact + theta * jnp.tanh(x) * (1.0 + t - s)[:, None]
  return F


def _fm_batch(key, b=5):
  k1, k2 = jax.random.split(key)
  t, s = flow_maps.sample_times(k1, b)
  x_t = flow_maps.gaussian_marginal_std(t, C)[:, None] * jax.random.normal(k2, (b, D))
  return x_t, t, s


def _trig_batch(key, b=5):
  k1, k2, k3 = jax.random.split(key, 3)
  tau = jax.random.uniform(k1, (b,), minval=0.2, maxval=1.4)
  x0, z = C * jax.random.normal(k2, (b, D)), C * jax.random.normal(k3, (b, D))
  return jnp.cos(tau)[:, None] * x0 + jnp.sin(tau)[:, None] * z, tau


def _scd_student(F, sigma_data=C):
  consistency = lambda x, t, labels=None: flow_maps.flow_map(F)(x, t, jnp.zeros_like(t))
  return flow_maps.trigflow_output(consistency, sigma_data=sigma_data)


def _fixed_point_losses():
  """Every loss as a function of theta, at a batch of Gaussian data, with exact teachers."""
  x_t, t, s = _fm_batch(jax.random.PRNGKey(0))
  x_trig, tau = _trig_batch(jax.random.PRNGKey(1))
  v = lambda x, t, labels=None: flow_maps.gaussian_velocity(x, t, C)
  exact = lambda x, t, s, labels=None: flow_maps.gaussian_flow_map(x, t, s, C)
  flow = dict(teacher_velocity=v, x_t=x_t, t=t, s=s, r=1.0, c=0.1)
  t_next = 0.7 * t
  cm = lambda F: (lambda x, t, labels=None: flow_maps.flow_map(F)(x, t, jnp.zeros_like(t)))
  return {
      'ayf_emd': lambda th: ayf_emd_loss(average_velocity=_perturbed_map(th), **flow),
      'ayf_lmd': lambda th: ayf_lmd_loss(average_velocity=_perturbed_map(th), **flow),
      'scd': lambda th: scd_loss(
          trigflow_output=_scd_student(_perturbed_map(th)), x_t=x_trig, t=tau, sigma_data=C,
          teacher_velocity=flow_maps.trigflow_velocity(GAUSS_DENOISER, sigma_data=C)),
      # Exact ODE steps as the teacher step; the target network sits at the fixed point too.
      'cd': lambda th: consistency_distillation_loss(
          consistency_fn=cm(_perturbed_map(th)), target_fn=cm(_perturbed_map(0.0)), x_t=x_t,
          t=t, x_next=exact(x_t, t, t_next), t_next=t_next),
      'pd': lambda th: progressive_distillation_loss(
          average_velocity=_perturbed_map(th), teacher_step=exact, x_t=x_t, t=t, s=s),
  }


class GaussianClosedFormTest(chex.TestCase):

  def test_closed_forms_match_the_library_teacher_and_an_ode_solve(self):
    x_t, t, s = _fm_batch(jax.random.PRNGKey(2))
    np.testing.assert_allclose(flow_maps.gaussian_velocity(x_t, t, C),
                               flow_maps.teacher_velocity(GAUSS_DENOISER)(x_t, t),
                               rtol=1e-4, atol=1e-5)
    # 200 Heun steps of the exact velocity from t to s.
    v = lambda x, t, labels=None: flow_maps.gaussian_velocity(x, t, C)
    step = lambda i, x: flow_maps.heun_step(v, x, t + (s - t) * i / 200,
                                            t + (s - t) * (i + 1) / 200)
    x = jax.lax.fori_loop(0, 200, step, x_t)
    np.testing.assert_allclose(flow_maps.gaussian_flow_map(x_t, t, s, C), x, rtol=1e-5,
                               atol=1e-5)
    # AYF's optimal consistency model at s = 0.
    np.testing.assert_allclose(flow_maps.gaussian_flow_map(x_t, t, 0 * t, C),
                               C * x_t / np.sqrt(t**2 + (1 - t)**2 * C**2)[:, None], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_the_exact_flow_map_is_a_fixed_point_of_every_loss(self):
    for name, loss in _fixed_point_losses().items():
      grad = self.variant(jax.grad(lambda th: jnp.sum(loss(th))))
      at_exact, off = float(grad(0.0)), float(grad(0.2))
      assert abs(at_exact) < 1e-5, (name, at_exact)
      assert abs(off) > 1e-2, (name, off)


def _smooth_student(theta):
  def F(x, t, s, labels=None):
    h = jnp.tanh(x @ theta['w'] + theta['a'] * t[:, None] + theta['b'] * s[:, None])
    return h @ theta['u']
  return F


class ConsistencyLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_emd_at_s_zero_is_parallel_to_the_scd_gradient(self):
    """Per example, the AYF-EMD gradient at s = 0 and the sCD gradient of the same consistency
    model (two coordinate systems, two codes) differ by a positive factor (dt/dtau ...)."""
    mixture = GaussianMixture.isotropic(means=[[-1.0, 0.0, 0.5], [1.0, 0.5, 0.0]], std=[0.4, 0.3])
    denoiser = lambda x, sigma, labels=None: mixture.denoise(x, sigma)
    k = jax.random.split(jax.random.PRNGKey(3), 4)
    theta = {'w': jax.random.normal(k[0], (D, 8)) / 2, 'a': jax.random.normal(k[1], (8,)),
             'b': jax.random.normal(k[2], (8,)), 'u': jax.random.normal(k[3], (8, D)) / 3}
    x_trig, tau = _trig_batch(jax.random.PRNGKey(4), b=3)
    sd = 0.5
    sigma = sd * jnp.tan(tau)  # the same points in flow-matching coordinates
    t = sigma / (1 + sigma)
    x_t = ((1 - t) / jnp.cos(tau))[:, None] * x_trig

    def per_example(i):
      sl = slice(i, i + 1)
      emd = lambda th: ayf_emd_loss(average_velocity=_smooth_student(th), x_t=x_t[sl], t=t[sl],
                                    s=0 * t[sl], c=None,
                                    teacher_velocity=flow_maps.teacher_velocity(denoiser)).sum()
      scd = lambda th: scd_loss(trigflow_output=_scd_student(_smooth_student(th), sd),
                                teacher_velocity=flow_maps.trigflow_velocity(denoiser,
                                                                             sigma_data=sd),
                                x_t=x_trig[sl], t=tau[sl], sigma_data=sd, c=None,
                                prior_weighting=False).sum()
      flat = lambda g: jnp.concatenate([jnp.ravel(l) for l in jax.tree.leaves(g)])
      return flat(jax.grad(emd)(theta)), flat(jax.grad(scd)(theta))

    for i in range(3):
      g_emd, g_scd = self.variant(per_example, static_argnums=0)(i)
      cos = float(g_emd @ g_scd / (jnp.linalg.norm(g_emd) * jnp.linalg.norm(g_scd)))
      assert float(jnp.linalg.norm(g_emd)) > 1e-3
      np.testing.assert_allclose(cos, 1.0, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_scd_gradient_and_adaptive_weight(self):
    x_t, tau = _trig_batch(jax.random.PRNGKey(5))
    teacher = flow_maps.trigflow_velocity(GAUSS_DENOISER, sigma_data=C)
    F = lambda x, t, labels=None: jnp.sin(x) * (1.0 + t)[:, None]
    w = jnp.linspace(-1.0, 1.0, 5)
    r, c = 0.4, 0.1

    def loss(e, w):
      return scd_loss(trigflow_output=lambda x, t, labels=None: F(x, t) + e,
                      teacher_velocity=teacher, x_t=x_t, t=tau, sigma_data=C, r=r, c=c,
                      log_weight=w).sum()

    grad_out, grad_w = self.variant(jax.grad(loss, argnums=(0, 1)))(jnp.zeros_like(x_t), w)
    v = teacher(x_t, tau)
    cs = (jnp.cos(tau) * jnp.sin(tau))[:, None]
    out, d_out = jax.jvp(F, (x_t, tau), (cs * v, cs[:, 0]))
    g = -jnp.cos(tau)[:, None]**2 * (C * out - v) - r * (cs * x_t + C * d_out)
    g = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + c)
    lam = 1 / (C * jnp.tan(tau))
    np.testing.assert_allclose(grad_out, -2 * (lam * jnp.exp(w))[:, None] * g / D, rtol=1e-4,
                               atol=1e-6)
    # d/dw (lambda e^w ||g||^2 / D - w) = lambda e^w ||g||^2 / D - 1.
    np.testing.assert_allclose(grad_w, lam * jnp.exp(w) * jnp.sum(g**2, -1) / D - 1, rtol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_adaptive_weight_at_its_optimum_cancels_the_prior_weighting(self):
    """At w = argmin_w (lambda e^w ||g_hat||^2 / D - w) = -log(lambda ||g_hat||^2 / D), the
    gradient on F is -2 g_hat / ||g_hat||^2 whatever lambda is: the learned weight undoes the
    prior 1 / (sigma_d tan t), so turning the prior off changes nothing once w has adapted."""
    x_t, tau = _trig_batch(jax.random.PRNGKey(9))
    teacher = flow_maps.trigflow_velocity(GAUSS_DENOISER, sigma_data=C)
    F = lambda x, t, labels=None: jnp.sin(x) * (1.0 + t)[:, None]

    def loss(e, w, prior):
      return scd_loss(trigflow_output=lambda x, t, labels=None: F(x, t) + e,
                      teacher_velocity=teacher, x_t=x_t, t=tau, sigma_data=C, log_weight=w,
                      prior_weighting=prior).sum()

    grads = self.variant(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    zero = jnp.zeros_like(x_t)
    by_prior = {}
    for prior in (True, False):
      g_out, _ = grads(zero, jnp.zeros_like(tau), prior)  # -2 lambda g_hat / D
      lam = 1 / (C * jnp.tan(tau)) if prior else jnp.ones_like(tau)
      g_hat = -g_out * D / (2 * lam[:, None])
      best = -jnp.log(lam * jnp.sum(g_hat**2, -1) / D)
      by_prior[prior], grad_w = grads(zero, best, prior)
      np.testing.assert_allclose(grad_w, 0.0, atol=1e-5)
      np.testing.assert_allclose(by_prior[prior],
                                 -2 * g_hat / jnp.sum(g_hat**2, -1, keepdims=True), rtol=1e-4)
    np.testing.assert_allclose(by_prior[True], by_prior[False], rtol=1e-4)
    assert float(jnp.max(jnp.abs(1 / (C * jnp.tan(tau)) - 1))) > 0.5  # lambda is not ~1 here

  @chex.variants(with_jit=True, without_jit=True)
  def test_cd_distances_and_target_gets_no_gradient(self):
    x_t, t, _ = _fm_batch(jax.random.PRNGKey(6))
    x_next, t_next = 0.9 * x_t, 0.8 * t
    model = lambda a: (lambda x, t, labels=None: a * x * t[:, None])

    def loss(a, b, distance):
      return consistency_distillation_loss(consistency_fn=model(a), target_fn=model(b), x_t=x_t,
                                           t=t, x_next=x_next, t_next=t_next, distance=distance,
                                           c=0.5).sum()

    diff = 2.0 * x_t * t[:, None] - 3.0 * x_next * t_next[:, None]
    sq = jnp.sum(diff**2, -1)
    np.testing.assert_allclose(self.variant(loss, static_argnums=2)(2.0, 3.0, 'l2'), sq.sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(self.variant(loss, static_argnums=2)(2.0, 3.0, 'pseudo_huber'),
                               jnp.sum(jnp.sqrt(sq + 0.25) - 0.5), rtol=1e-5)
    grad_target = self.variant(jax.grad(loss, argnums=1), static_argnums=2)(2.0, 3.0, 'l2')
    np.testing.assert_array_equal(grad_target, 0.0)


class ProgressiveLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_target_is_two_ddim_half_steps_of_the_teacher(self):
    x_t, t, s = _fm_batch(jax.random.PRNGKey(7))
    mixture = GaussianMixture.isotropic(means=[[-1.0, 0.0, 0.5], [1.0, 0.5, 0.0]], std=[0.4, 0.3])

    def ddim(x, a, b):
      # DDIM written out with the EDM denoiser: x0 and eps predicted at a, recombined at b.
      x0 = mixture.denoise(x / (1 - a)[:, None], a / (1 - a))
      eps = (x - (1 - a)[:, None] * x0) / a[:, None]
      return (1 - b)[:, None] * x0 + b[:, None] * eps

    mid = (t + s) / 2
    target = (ddim(ddim(x_t, t, mid), mid, s) - x_t) / (s - t)[:, None]
    teacher_step = lambda x, a, b, labels=None: flow_maps.euler_step(
        flow_maps.teacher_velocity(lambda y, sg, lb=None: mixture.denoise(y, sg)), x, a, b)
    delta = jax.random.normal(jax.random.PRNGKey(8), x_t.shape)

    def loss(eps):
      return progressive_distillation_loss(
          average_velocity=lambda x, a, b, labels=None: target + eps * delta,
          teacher_step=teacher_step, x_t=x_t, t=t, s=s)

    np.testing.assert_allclose(self.variant(loss)(0.0), 0.0, atol=1e-8)
    np.testing.assert_allclose(self.variant(loss)(1.0), jnp.sum(delta**2, -1), rtol=1e-4)
