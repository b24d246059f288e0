"""AYF's adversarial finetuning (ayf_emd_adv): R3GAN's relativistic pairing losses and R1/R2
penalties (closed forms, finite differences), the method (AYF-EMD exactly at GAN weight 0, the
scheduled groups per phase, a student started from an exported run, the digits variant) and a toy
run through the CLI.
"""
import json
import math
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config
from onestep_jax.losses.gan import (gradient_penalty, relativistic_discriminator_loss,
                                    relativistic_generator_loss)
from onestep_jax.methods import build_method
from onestep_jax.methods.flow_map_adversarial import AdversarialFlowMap
from onestep_jax.train.export import export_params
from train_helpers.configs import tiny_config
from train_helpers.phases import groups_changed_by_each_phase

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = get_dataset('ring8')


def _discriminator(params, x):
  """A smooth nonlinear logit per example of inputs [B, 2, 3] (no coupling across examples)."""
  h = x.reshape(x.shape[0], -1)
  return params['c'] * (jnp.tanh(h @ params['w'] + params['b']) @ params['a']
                        + 0.3 * jnp.sum(h**3, axis=-1))


def _disc_params(dtype):
  k_w, k_b, k_a = jax.random.split(jax.random.PRNGKey(0), 3)
  return {'w': jax.random.normal(k_w, (6, 5), dtype), 'b': jax.random.normal(k_b, (5,), dtype),
          'a': jax.random.normal(k_a, (5,), dtype), 'c': jnp.asarray(1.0, dtype)}


class RelativisticLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_closed_forms_and_symmetries(self):
    d_loss = self.variant(lambda r, f: relativistic_discriminator_loss(real_logits=r,
                                                                       fake_logits=f))
    g_loss = self.variant(lambda r, f: relativistic_generator_loss(real_logits=r, fake_logits=f))
    equal = jnp.array([-3.0, 0.0, 2.5])
    np.testing.assert_allclose(d_loss(equal, equal), [math.log(2.0)] * 3, rtol=1e-6)
    np.testing.assert_allclose(g_loss(equal, equal), [math.log(2.0)] * 3, rtol=1e-6)
    real, fake = jnp.array([1.0, 0.0, -2.0]), jnp.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(d_loss(real, fake),
                               [math.log1p(math.exp(-1.0)), math.log1p(math.e),
                                math.log1p(math.exp(5.0))], rtol=1e-6)
    # Exchanging real and fake turns one loss into the other.
    np.testing.assert_allclose(d_loss(real, fake), g_loss(fake, real), rtol=1e-6)
    # softplus(u) - softplus(-u) = u with u = real - fake.
    np.testing.assert_allclose(g_loss(real, fake) - d_loss(real, fake), real - fake, atol=1e-5)
    # Only the pair's difference counts.
    np.testing.assert_allclose(d_loss(real + 7.0, fake + 7.0), d_loss(real, fake), rtol=1e-5)
    # Patch logits [B, H, W]: the mean over patches of the paired losses.
    patches_r = jnp.arange(12.0).reshape(3, 2, 2) / 6.0
    patches_f = -patches_r[::-1]
    np.testing.assert_allclose(
        d_loss(patches_r, patches_f),
        jnp.mean(jax.nn.softplus(patches_f - patches_r), axis=(1, 2)), rtol=1e-6)

  def test_mismatched_pairs_are_refused(self):
    with pytest.raises(AssertionError):
      relativistic_discriminator_loss(real_logits=jnp.zeros(3), fake_logits=jnp.zeros(4))


class GradientPenaltyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_r1_r2_equal_central_differences(self):
    with jax.enable_x64(True):
      params = _disc_params(jnp.float64)
      d = lambda x: _discriminator(params, x)
      k_real, k_fake = jax.random.split(jax.random.PRNGKey(1))
      real = jax.random.normal(k_real, (4, 2, 3), jnp.float64)
      fake = 1.5 * jax.random.normal(k_fake, (4, 2, 3), jnp.float64)
      penalty = self.variant(lambda x: gradient_penalty(discriminator=d, x=x))
      h = 1e-5
      for x in (real, fake):  # R1 on real samples, R2 on fake ones
        flat = np.asarray(x).reshape(4, -1)
        fd = np.zeros(4)
        for i in range(4):  # perturb one coordinate of one example at a time
          for j in range(flat.shape[1]):
            e = np.zeros_like(flat)
            e[i, j] = h
            plus = d(jnp.asarray((flat + e).reshape(x.shape)))[i]
            minus = d(jnp.asarray((flat - e).reshape(x.shape)))[i]
            fd[i] += float((plus - minus) / (2 * h)) ** 2
        got = penalty(x)
        assert got.dtype == jnp.float64 and got.shape == (4,)
        np.testing.assert_allclose(got, fd, rtol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  def test_penalty_is_differentiable_in_the_discriminator(self):
    # D_c = c D: the penalty is c^2 ||grad D||^2, so d/dc is 2 c ||grad D||^2.
    params = _disc_params(jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 2, 3))
    total = lambda c: jnp.sum(gradient_penalty(
        discriminator=lambda v: _discriminator({**params, 'c': c}, v), x=x))
    grad = self.variant(jax.grad(total))(jnp.asarray(1.5))
    np.testing.assert_allclose(grad, 2 * 1.5 * total(jnp.asarray(1.0)), rtol=1e-5)


def _config(method, **overrides):
  return resolve_config(tiny_config('distill_toy2d', method, **overrides), DATA)


def _batch():
  return {k: jnp.asarray(v) for k, v in DATA.get_batch(0, 32, seed=0).items()}


def _student_grads(setup, params):
  phase = {p.name: p for p in setup.phases}['student']
  return jax.jit(jax.grad(lambda p: phase.loss_fn(p, _batch(), jax.random.PRNGKey(3)),
                          has_aux=True))(params)


def test_gan_weight_zero_gives_the_ayf_emd_gradient():
  emd = build_method(_config('ayf_emd'), DATA)
  params = emd.init_params(jax.random.PRNGKey(0))
  emd_grads, emd_metrics = _student_grads(emd, params)
  results = {}
  for weight in (0.0, 1.0):
    adv = build_method(_config('ayf_emd_adv', gan_weight=weight), DATA)
    adv_params = {**adv.init_params(jax.random.PRNGKey(0)), 'student': params['student']}
    results[weight] = _student_grads(adv, adv_params)
  grads, metrics = results[0.0]
  assert np.isfinite(float(metrics['gan'])) and float(metrics['gan']) > 0
  np.testing.assert_allclose(float(metrics['loss']), float(emd_metrics['loss']), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads['student']), jax.tree.leaves(emd_grads['student'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # With weight 1 the GAN term reaches the student through its samples.
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(results[1.0][0]['student']), jax.tree.leaves(emd_grads['student'])))
  assert diff > 1e-4


def test_each_phase_updates_only_its_groups():
  setup = build_method(_config('ayf_emd_adv'), DATA)
  assert [(p.name, p.updates) for p in setup.phases] == [
      ('discriminator', ('discriminator',)), ('student', ('student', 'clock'))]
  assert setup.stages[0].schedule == (('discriminator', 1), ('student', 1))
  changed = groups_changed_by_each_phase(setup, DATA, setup.init_params(jax.random.PRNGKey(0)))
  assert changed == {'discriminator': {'discriminator'}, 'student': {'student', 'clock'}}


def test_student_starts_from_an_exported_flow_map_run(tmp_path):
  emd = build_method(_config('ayf_emd'), DATA)
  exported = emd.init_params(jax.random.PRNGKey(7))['student']
  meta = dict(emd.export_kwargs)
  export_params(tmp_path / 'run' / 'export', exported, net_kwargs=meta.pop('network_kwargs'),
                metadata=meta)
  adv = build_method(_config('ayf_emd_adv', student_init=str(tmp_path / 'run')), DATA)
  params = adv.init_params(jax.random.PRNGKey(0))
  for a, b in zip(jax.tree.leaves(params['student']), jax.tree.leaves(exported)):
    np.testing.assert_array_equal(a, b)
  # A finetuned student has finished its tangent warm-up: r = r_max at step 0.
  method = AdversarialFlowMap(_config('ayf_emd_adv', student_init=str(tmp_path / 'run')), DATA)
  assert float(method.warmup(params, 0.99)) == pytest.approx(0.99)
  assert float(AdversarialFlowMap(_config('ayf_emd_adv'), DATA).warmup(params, 0.99)) == 0.0
  one_step = tmp_path / 'one_step'
  export_params(one_step, exported, net_kwargs={}, metadata={
      'objective': 'one_step', 'network': 'mlp', 'sigma_data': 0.5})
  with pytest.raises(ValueError, match='not a flow-map student'):
    _config('ayf_emd_adv', student_init=str(one_step))


def test_digits_variant_reads_the_teacher_unet_bottleneck():
  data = get_dataset('digits')
  c = load_config_file(f'{ROOT}/configs/distill_digits.py:ayf_emd_adv')
  assert c.method.teacher == 'bundled:digits' and c.method.init_from_teacher is True
  assert tuple(c.method.sample_steps) == (1, 2, 4, 8) and c.method.student_init is None
  shapes = jax.eval_shape(build_method(resolve_config(c, data), data).init_params,
                          jax.random.PRNGKey(0))
  # The discriminator's backbone is a copy of the teacher; its head convolves the bottleneck.
  assert jax.tree.structure(shapes['discriminator']['backbone']) == jax.tree.structure(
      shapes['teacher'])
  assert shapes['discriminator']['head']['Conv_0']['kernel'].shape[:2] == (3, 3)


def test_toy_cli_run_writes_finite_student_metrics(tmp_path):
  cmd = [sys.executable, str(ROOT / 'experiments' / 'main.py'),
         f'--config={ROOT}/configs/distill_toy2d.py:ayf_emd_adv', f'--workdir={tmp_path}',
         '--progress=false', '--config.train.compilation_cache=false',
         '--config.net.kwargs.hidden_dim=16', '--config.net.kwargs.num_layers=1',
         '--config.train.batch_size=32', '--config.train.num_steps=1',
         '--config.train.save_every=1', '--config.method.teacher_sample_steps=2',
         '--config.method.sample_steps=(1,2)', '--config.method.discriminator_width=16',
         '--config.eval.num_samples=200', '--config.eval.batch_size=200']
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  student = {k: v for k, v in metrics.items() if k.startswith('student/')}
  assert {k.rsplit('@', 1)[1] for k in student} == {'1', '2'}
  assert len(student) >= 4 and all(np.isfinite(v) for v in student.values()), student
