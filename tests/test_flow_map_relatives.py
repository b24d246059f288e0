"""Relatives of the flow-map methods: MeanFlow and shortcut models (teacher-free), rCM (sCD plus
DMD), guided teachers. Closed forms on Gaussian data, the special cases that must coincide, and
short runs through the trainer and the experiment runner."""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.diffusion import flow_maps
from onestep_jax.experiment.runner import resolve_config, run
from onestep_jax.losses.flow_map import ayf_emd_loss
from onestep_jax.losses.meanflow import meanflow_loss
from onestep_jax.losses.shortcut import shortcut_self_consistency_loss
from onestep_jax.methods.flow_map_distillation import FlowMapDistillation
from onestep_jax.methods.networks import build_network, init_network
from onestep_jax.methods.teachers import load_teacher
from onestep_jax.train.export import export_params
from train_helpers.configs import tiny_config

RING = get_dataset('ring8')
C, D = 0.6, 3  # Gaussian data N(0, C^2 I) in D dimensions


def _exact_plus(theta):
  """F = F* + theta h: the exact average velocity of N(0, C^2 I) plus a smooth perturbation."""
  def F(x, t, s, labels=None):
    gap = (s - t)[:, None]
    exact = (flow_maps.gaussian_flow_map(x, t, s, C) - x) / jnp.where(gap == 0, 1.0, gap)
    exact = jnp.where(gap == 0, flow_maps.gaussian_velocity(x, t, C), exact)
    return exact + theta * jnp.tanh(x) * (1.0 + t - s)[:, None]
  return F


def _gaussian_batch(key, b=6):
  k1, k2 = jax.random.split(key)
  t, s = flow_maps.sample_times(k1, b)
  x_t = flow_maps.gaussian_marginal_std(t, C)[:, None] * jax.random.normal(k2, (b, D))
  return x_t, t, s


def _student(theta):
  def F(x, t, s, labels=None):
    h = jnp.tanh(x @ theta['w'] + theta['a'] * t[:, None] + theta['b'] * s[:, None])
    return h @ theta['u'] + 0.3 * x
  return F


def _theta(key, h=8):
  k = jax.random.split(key, 4)
  return {'w': jax.random.normal(k[0], (D, h)) / 2, 'a': jax.random.normal(k[1], (h,)),
          'b': jax.random.normal(k[2], (h,)), 'u': jax.random.normal(k[3], (h, D)) / 3}


def _flat(tree):
  return jnp.concatenate([jnp.ravel(l) for l in jax.tree.leaves(tree)])


class MeanFlowLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_meanflow_identity_holds_for_the_exact_gaussian_flow_map(self):
    # float64: the adaptive weight 1 / (||Delta||^2 + 1e-3) magnifies float32 rounding.
    with jax.enable_x64(True):
      x_t, t, s = jax.tree.map(lambda a: a.astype(jnp.float64),
                               _gaussian_batch(jax.random.PRNGKey(0)))
      s = s.at[:2].set(t[:2])  # s = t: the flow-matching case
      v = flow_maps.gaussian_velocity(x_t, t, C)  # the marginal velocity

      def loss(theta, p):
        return meanflow_loss(average_velocity=_exact_plus(theta), x_t=x_t, t=t, s=s,
                             velocity=v, p=p).sum()

      for p in (0.0, 1.0):
        value_and_grad = self.variant(jax.value_and_grad(loss), static_argnums=1)
        value, grad = value_and_grad(0.0, p)
        # u = v - (t - s) du/dt holds exactly: zero residual, zero gradient; not off the map.
        assert float(value) < 1e-20, (p, float(value))
        assert abs(float(grad)) < 1e-8, p
        assert abs(float(value_and_grad(0.2, p)[1])) > 1e-2, p

  @chex.variants(with_jit=True, without_jit=True)
  def test_unweighted_gradient_is_twice_the_unnormalised_emd_gradient(self):
    """With a teacher's velocity, MeanFlow (p = 0) and AYF-EMD (r = 1, c = None) weighted by
    1 / (t - s) pull F the same way: gradients 2 (F - target) = -2 g."""
    teacher = lambda x, t, labels=None: flow_maps.gaussian_velocity(x, t, C)
    theta = _theta(jax.random.PRNGKey(1))
    x_t, t, s = _gaussian_batch(jax.random.PRNGKey(2))

    def grads(theta):
      mf = lambda th: meanflow_loss(average_velocity=_student(th), x_t=x_t, t=t, s=s,
                                    velocity=teacher(x_t, t), p=0.0).sum()
      emd = lambda th: (ayf_emd_loss(average_velocity=_student(th), teacher_velocity=teacher,
                                     x_t=x_t, t=t, s=s, c=None) / (t - s)).sum()
      return _flat(jax.grad(mf)(theta)), _flat(jax.grad(emd)(theta))

    g_mf, g_emd = self.variant(grads)(theta)
    assert float(jnp.linalg.norm(g_mf)) > 1e-2
    np.testing.assert_allclose(g_mf, 2.0 * g_emd, rtol=1e-4, atol=1e-6)


class ShortcutLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_self_consistency_target_is_two_half_steps_of_the_model(self):
    theta = _theta(jax.random.PRNGKey(3))
    x_t, t, s = _gaussian_batch(jax.random.PRNGKey(4))
    euler = jnp.arange(t.shape[0]) % 2 == 0
    mid = (t + s) / 2

    def manual(th):
      # Written out: x' = x_t + (m - t) F(x_t, t, m'), z = x' + (s - m) F(x', m, s'), where
      # s' = the step's end, or its start (instantaneous velocity) at the finest level.
      F = _student(th)
      end = lambda a, b: jnp.where(euler, a, b)
      x_mid = x_t + (mid - t)[:, None] * F(x_t, t, end(t, mid))
      z = x_mid + (s - mid)[:, None] * F(x_mid, mid, end(mid, s))
      return (z - x_t) / (s - t)[:, None]

    target = manual(theta)
    # The target is the average of the two half-step velocities.
    F = _student(theta)
    x_mid = x_t + (mid - t)[:, None] * F(x_t, t, mid)
    np.testing.assert_allclose(
        jnp.where(euler[:, None], target,
                  0.5 * (F(x_t, t, mid) + F(x_mid, mid, s))),
        target, rtol=1e-5)

    def loss(th):
      return shortcut_self_consistency_loss(average_velocity=_student(th), x_t=x_t, t=t, s=s,
                                            euler=euler)

    expected = jnp.sum((F(x_t, t, s) - target)**2, -1)
    np.testing.assert_allclose(self.variant(loss)(theta), expected, rtol=1e-5)
    # The gradient flows through the one big step only.
    g = self.variant(lambda th: _flat(jax.grad(lambda p: loss(p).sum())(th)))(theta)
    g_ref = _flat(jax.grad(lambda p: jnp.sum((_student(p)(x_t, t, s) - target)**2))(theta))
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  def test_the_exact_gaussian_flow_map_is_self_consistent(self):
    x_t, t, s = _gaussian_batch(jax.random.PRNGKey(5))
    grad = self.variant(jax.grad(lambda th: shortcut_self_consistency_loss(
        average_velocity=_exact_plus(th), x_t=x_t, t=t, s=s).sum()))
    assert abs(float(grad(0.0))) < 1e-5
    assert abs(float(grad(0.2))) > 1e-2


# --- Methods ---------------------------------------------------------------------------------

def _batch():
  return {k: jnp.asarray(v) for k, v in RING.get_batch(0, 32, seed=0).items()}


def _grads(ctx):
  """Gradients and metrics of a method's loss (traced afresh at each call, so that a changed
  ctx.m field takes effect)."""
  setup = ctx.setup()
  params = setup.init_params(jax.random.PRNGKey(0))
  (phase,) = setup.phases
  return jax.jit(jax.grad(lambda p: phase.loss_fn(p, _batch(), jax.random.PRNGKey(1)),
                          has_aux=True))(params)


def test_rcm_with_dmd_weight_zero_is_scd():
  # With sCM's adaptive weight (off in the ring recipe), so that its gradients are compared too.
  scd = FlowMapDistillation(resolve_config(tiny_config('distill_toy2d', 'scd',
                                                   adaptive_weighting=True), RING), RING)
  rcm = FlowMapDistillation(resolve_config(tiny_config('distill_toy2d', 'rcm', dmd_weight=0.0,
                                                   adaptive_weighting=True), RING), RING)
  g_scd, m_scd = _grads(scd)
  g_rcm, m_rcm = _grads(rcm)
  np.testing.assert_allclose(m_rcm['scd'], m_scd['loss'], rtol=1e-6)
  for group in ('student', 'weighting'):
    np.testing.assert_allclose(_flat(g_rcm[group]), _flat(g_scd[group]), rtol=1e-5, atol=1e-8)
  assert float(jnp.linalg.norm(_flat(g_rcm['fake_score']))) > 0  # the fake score trains
  assert np.isfinite(float(m_rcm['denoising'])) and float(m_rcm['dmd']) > 0
  rcm.m.dmd_weight = 1.0  # the same run with the DMD term on
  g_dmd, _ = _grads(rcm)
  assert float(jnp.max(jnp.abs(_flat(g_dmd['student']) - _flat(g_scd['student'])))) > 1e-4


def _mlp_export(path, num_classes=0):
  """A random MLP teacher; with classes, every weight is perturbed so that the (zero-initialised)
  output layer passes the labels through."""
  kwargs = {'data_dim': 2, 'hidden_dim': 16, 'num_layers': 1, 'label_dim': num_classes}
  params = init_network(build_network('mlp', kwargs), jax.random.PRNGKey(7), example_shape=(2,),
                        num_classes=num_classes)
  if num_classes:
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    params = jax.tree.unflatten(tree, [l + 0.3 * jax.random.normal(k, l.shape)
                                       for l, k in zip(leaves, keys)])
  export_params(path, params, net_kwargs=kwargs,
                metadata={'network': 'mlp', 'objective': 'edm', 'sigma_data': 0.5,
                          'num_classes': num_classes})
  return str(path)


def _weak_export(path):
  return _mlp_export(path)


def test_autoguided_teacher_at_scale_one_is_the_main_teacher(tmp_path):
  weak_dir = _weak_export(tmp_path / 'weak')
  x = jax.random.normal(jax.random.PRNGKey(8), (16, 2))
  t = jnp.linspace(0.05, 0.95, 16)

  def teacher(**fields):
    c = resolve_config(tiny_config('distill_toy2d', 'cd', **fields), RING)
    ctx = FlowMapDistillation(c, RING)
    params = ctx.frozen_params()  # what init_params gives the run besides trained groups
    return jax.jit(ctx.teacher_velocity(params))(x, t), params

  plain, _ = teacher()
  guided, params = teacher(guidance='autoguidance', weak_teacher=weak_dir, guidance_scale=1.0)
  assert 'weak_teacher' in params  # a frozen group of the run
  np.testing.assert_allclose(guided, plain, rtol=1e-5, atol=1e-6)
  weak = load_teacher(weak_dir, RING)
  v_weak = flow_maps.teacher_velocity(lambda y, sigma, labels=None: weak.denoise(
      weak.params, y, sigma, labels))(x, t)
  assert float(jnp.max(jnp.abs(v_weak - plain))) > 0.1
  twice, _ = teacher(guidance='autoguidance', weak_teacher=weak_dir, guidance_scale=2.0)
  np.testing.assert_allclose(twice, 2.0 * plain - v_weak, rtol=1e-4, atol=1e-5)


def test_classifier_free_guided_teacher_on_the_labelled_ring(tmp_path):
  """A conditional teacher on ring8 with 2 classes: scale 1 is the conditional teacher, scale w
  is v_null + w (v_c - v_null) with zeroed labels as the null label (label dropout's)."""
  teacher_dir = _mlp_export(tmp_path / 'teacher', num_classes=2)
  ring = get_dataset('ring8', num_classes=2)
  x = jax.random.normal(jax.random.PRNGKey(8), (16, 2))
  t = jnp.linspace(0.05, 0.95, 16)
  labels = jax.nn.one_hot(jnp.arange(16) % 2, 2)

  def velocity(**fields):
    c = tiny_config('distill_toy2d', 'cd', teacher=teacher_dir, **fields)
    c.data.kwargs.num_classes = 2
    c.data.conditional = True
    ctx = FlowMapDistillation(resolve_config(c, ring), ring)
    return lambda lb: jax.jit(ctx.teacher_velocity(ctx.frozen_params()))(x, t, lb)

  plain = velocity()
  v_c, v_null = plain(labels), plain(jnp.zeros_like(labels))
  assert float(jnp.max(jnp.abs(v_c - v_null))) > 1e-3  # the labels matter
  np.testing.assert_allclose(velocity(guidance='classifier_free', guidance_scale=1.0)(labels),
                             v_c, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(velocity(guidance='classifier_free', guidance_scale=3.0)(labels),
                             v_null + 3.0 * (v_c - v_null), rtol=1e-4, atol=1e-5)


def test_guidance_fields_are_checked():
  with pytest.raises(ValueError, match='weak_teacher'):
    FlowMapDistillation(tiny_config('distill_toy2d', 'ayf_emd', guidance='autoguidance'), RING)
  with pytest.raises(ValueError, match='guidance'):
    FlowMapDistillation(tiny_config('distill_toy2d', 'ayf_emd', guidance='auto'), RING)


@pytest.mark.parametrize('file,method', [('flowmap_toy2d', 'meanflow'),
                                         ('flowmap_toy2d', 'shortcut')])  # rcm: test_flow_map_methods
def test_short_run_writes_finite_metrics(tmp_path, file, method):
  c = tiny_config(file, method, sample_steps=(1,))
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.compilation_cache = False
  c.eval.num_samples = 300
  c.eval.batch_size = 300
  metrics = run(c, str(tmp_path), progress=False)
  written = json.loads((tmp_path / 'metrics.json').read_text())
  assert {'student/swd@1', 'student/mmd@1', 'teacher/swd@35'} <= set(written)
  assert all(np.isfinite(written[k]) for k in ('student/swd@1', 'student/mmd@1'))
  history = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  losses = [h['student/loss'] for h in history if 'student/loss' in h]
  assert losses and all(np.isfinite(losses)), history
  assert metrics['student/swd@1'] == written['student/swd@1']
