"""Every one-step method on a tiny MLP: finite losses, and each phase changes exactly its groups."""

import jax
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.diffusion import noise_levels, samplers
from onestep_jax.experiment.runner import resolve_config
from onestep_jax.methods import build_method
from train_helpers.configs import tiny_config
from train_helpers.phases import groups_changed_by_each_phase

METHODS = ('diff_instruct', 'dmd', 'dmd2', 'sid', 'sim')


def _toy_config(method):
  c = tiny_config('distill_toy2d', method, discriminator_width=32)
  if 'regression_pairs' in c.method:
    c.method.update({'regression_pairs': 64, 'teacher_sample_steps': 4})
  return c


def _norms(tree):
  return {name: float(sum(np.sum(np.square(l)) for l in jax.tree.leaves(sub)))
          for name, sub in tree.items()}


@pytest.mark.parametrize('method', METHODS)
def test_each_phase_has_finite_loss_and_gradients_for_its_groups(method):
  """Each phase's loss is finite and moves every group it updates; the fake-score phase sees
  the generator only through stop-gradient samples."""
  data = get_dataset('ring8')
  setup = build_method(resolve_config(_toy_config(method), data), data)
  params = setup.init_params(jax.random.PRNGKey(0))
  batch = {k: jax.numpy.asarray(v) for k, v in data.get_batch(0, 32, seed=0).items()}
  for phase in setup.phases:
    grad_fn = jax.jit(jax.grad(lambda p: phase.loss_fn(p, batch, jax.random.PRNGKey(2)),
                               has_aux=True))
    grads, metrics = grad_fn(params)
    assert all(np.isfinite(float(v)) for v in metrics.values()), (phase.name, metrics)
    norms = _norms(grads)
    for group in phase.updates:
      assert 0 < norms[group] < np.inf, (phase.name, group, norms)
    if phase.name == 'fake_score':
      assert norms['generator'] == 0.0
  generator = {g.name: g for g in setup.groups}['generator']
  assert generator.ema_rampup_ratio == 0.05  # EDM's EMA ramp-up, as for teachers
  trainable = {g.name for g in setup.groups if g.trainable}
  assert trainable == {'generator', 'fake_score'} | ({'discriminator'} if method == 'dmd2'
                                                     else set())
  assert {u for p in setup.phases for u in p.updates} == trainable


def test_one_step_run_updates_only_the_scheduled_groups():
  """Through the trainer, a fake-score-only stage leaves the generator untouched and a
  generator-only stage leaves the fake score and discriminator untouched (DMD2: three groups)."""
  data = get_dataset('ring8')
  setup = build_method(resolve_config(_toy_config('dmd2'), data), data)
  params = setup.init_params(jax.random.PRNGKey(0))
  changed = groups_changed_by_each_phase(setup, data, params)
  for phase in setup.phases:
    assert changed[phase.name] == set(phase.updates), phase.name


def test_dmd_regression_pairs_are_teacher_ode_samples():
  """The regression targets are the teacher's Heun samples from sigma_max z of their latents z."""
  data = get_dataset('ring8')
  c = _toy_config('dmd')
  params = build_method(resolve_config(c, data), data).init_params(jax.random.PRNGKey(0))
  pairs = jax.device_get(params['regression_pairs'])
  assert pairs['z'].shape == pairs['x'].shape == (64, 2)
  sigmas = noise_levels.karras_sigmas(c.method.teacher_sample_steps)
  expected = samplers.heun_sampler(lambda x, s, labels=None: data.mixture.denoise(x, s),
                                   80.0 * pairs['z'], sigmas=sigmas)
  np.testing.assert_allclose(pairs['x'], expected, rtol=1e-4, atol=1e-5)
