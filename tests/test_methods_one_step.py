"""Every one-step method on a tiny MLP: finite losses, and each phase changes exactly its groups."""

import types

import jax
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.diffusion import noise_levels, samplers
from onestep_jax.experiment.runner import resolve_config
from onestep_jax.methods import build_method
from onestep_jax.methods.optimizer import adam
from train_helpers.configs import tiny_config
from train_helpers.optimizers import successive_updates
from train_helpers.phases import check_phase_gradients, group_norms, groups_changed_by_each_phase

METHODS = ('diff_instruct', 'dmd', 'dmd2', 'sid', 'sim')


def _toy_config(method):
  c = tiny_config('distill_toy2d', method, discriminator_width=32)
  if 'regression_pairs' in c.method:
    c.method.update({'regression_pairs': 64, 'teacher_sample_steps': 4})
  return c


@pytest.mark.parametrize('method', METHODS)
def test_each_phase_has_finite_loss_and_gradients_for_its_groups(method):
  """Each phase's loss is finite and moves every group it updates; the fake-score phase sees
  the generator only through stop-gradient samples."""
  data = get_dataset('ring8')
  setup = build_method(resolve_config(_toy_config(method), data), data)
  params = setup.init_params(jax.random.PRNGKey(0))
  batch = {k: jax.numpy.asarray(v) for k, v in data.get_batch(0, 32, seed=0).items()}
  check_phase_gradients(setup, params, batch)
  generator = {g.name: g for g in setup.groups}['generator']
  assert generator.ema_rampup_ratio == 0.05  # EDM's EMA ramp-up, as for teachers
  trainable = {g.name for g in setup.groups if g.trainable}
  assert trainable == {'generator', 'fake_score'} | ({'discriminator'} if method == 'dmd2'
                                                     else set())
  assert {u for p in setup.phases for u in p.updates} == trainable


@pytest.mark.parametrize('reuse,share', [(False, False), (True, False), (True, True)])
def test_one_step_run_updates_only_the_scheduled_groups(reuse, share):
  """Through the trainer, a fake-score-only stage leaves the generator untouched and a
  generator-only stage leaves the fake score and discriminator untouched (DMD2: three groups).
  With method.reuse_generator_samples the phase taking the generator's samples updates the fake
  score and discriminator; with share_fake_score_noise too, the generator phase updates all
  three."""
  data = get_dataset('ring8')
  c = _toy_config('dmd2')
  c.method.update(reuse_generator_samples=reuse, share_fake_score_noise=share)
  setup = build_method(resolve_config(c, data), data)
  updates = {p.name: set(p.updates) for p in setup.phases}
  fake = {'fake_score', 'discriminator'}
  assert updates == {'fake_score': fake, 'generator': {'generator'} | (fake if share else set()),
                     **({'fake_score_from_generator': fake} if reuse and not share else {})}
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


def _joint_and_separate(method, **options):
  """Gradients, metrics and what it hands over (or None) of the generator phase of `method` with
  `options`, and the gradients and metrics of the plain generator phase (without them) on the
  same draw; with that draw's pieces."""
  from onestep_jax.methods.one_step import OneStep
  data = get_dataset('ring8')
  c = resolve_config(_toy_config(method), data)
  c.method.update(reuse_generator_samples=False, share_fake_score_noise=False)
  plain = {p.name: p for p in build_method(c, data).phases}['generator'].loss_fn
  c.method.update(options)
  setup = build_method(c, data)
  params = setup.init_params(jax.random.PRNGKey(0))
  batch = {k: jax.numpy.asarray(v) for k, v in data.get_batch(0, 32, seed=0).items()}
  key = jax.random.PRNGKey(3)
  phases = {p.name: p for p in setup.phases}

  def joint(p):
    loss, metrics, *handed = phases['generator'].loss_fn(p, batch, key)
    return loss, (metrics, handed)

  grads, (metrics, handed) = jax.grad(joint, has_aux=True)(params)
  ctx = OneStep(c, data)
  k_draw, *k_fake = jax.random.split(key, 4)
  g_gen, m_gen = jax.grad(lambda p: plain(p, batch, k_draw), has_aux=True)(params)
  d = ctx.draw(k_draw, batch)
  x_g = ctx.generate(params['generator'], d.z, d.labels)
  return types.SimpleNamespace(c=c, data=data, ctx=ctx, phases=phases, params=params,
                               batch=batch, key=key, grads=grads, metrics=metrics,
                               handed=handed[0] if handed else None, g_gen=g_gen, m_gen=m_gen,
                               d=d, x_g=x_g, k_fake=k_fake)


def _assert_each_group_gets(r, g_fake):
  """The joint phase's gradients are the plain generator phase's for the generator and g_fake's
  for the fake score and discriminator."""
  expected = {'generator': r.g_gen, 'fake_score': g_fake, 'discriminator': g_fake}
  assert {'generator', 'fake_score'} <= set(r.grads)
  assert set(r.grads) - set(expected) <= {'regression_pairs'}
  for group in set(r.grads) & set(expected):
    for a, b in zip(jax.tree.leaves(r.grads[group]), jax.tree.leaves(expected[group][group])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=group)
  np.testing.assert_allclose(r.metrics['loss'], r.m_gen['loss'], rtol=1e-6)


def test_reused_samples_are_handed_to_a_fake_score_update_with_its_own_gradient():
  """method.reuse_generator_samples: the generator phase's loss and gradient are the plain
  generator phase's on the same draw; it hands over its samples and keys, and the phase taking
  them gets the gradient of the fake-score loss on those samples, stop-gradient (DMD2's official
  loop), for the fake score and discriminator."""
  r = _joint_and_separate('dmd2', reuse_generator_samples=True)
  giver, taker = r.phases['generator'], r.phases['fake_score_from_generator']
  assert giver.gives and taker.takes == 'generator'
  assert float(group_norms(r.g_gen)['discriminator']) > 0  # the trainer keeps it out
  for a, b in zip(jax.tree.leaves(r.grads['generator']), jax.tree.leaves(r.g_gen['generator'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(r.metrics['loss'], r.m_gen['loss'], rtol=1e-6)
  np.testing.assert_array_equal(r.handed['x_g'], r.x_g)
  np.testing.assert_array_equal(r.handed['keys'], np.stack(r.k_fake))
  g_taker, m_taker = jax.grad(
      lambda p: taker.loss_fn(p, r.batch, jax.random.PRNGKey(9), r.handed), has_aux=True)(r.params)
  g_fake, m_fake = jax.grad(
      lambda p: r.ctx.fake_score_objective(p, r.batch, r.k_fake, r.x_g, r.d.labels),
      has_aux=True)(r.params)
  norms = group_norms(g_taker)
  assert norms['fake_score'] > 0 and norms['discriminator'] > 0 and norms['generator'] == 0.0
  for group in ('fake_score', 'discriminator'):
    for a, b in zip(jax.tree.leaves(g_taker[group]), jax.tree.leaves(g_fake[group])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=group)
  np.testing.assert_allclose(m_taker['denoising'], m_fake['denoising'], rtol=1e-6)


# stop-gradient reads (DMD: with its regression term; DMD2: with the GAN term), reads through the
# fake score's input (SiD), and a density ratio from the discriminator (Uni-Instruct)
@pytest.mark.parametrize('method', ('dmd', 'dmd2', 'sid', 'uni_instruct'))
def test_shared_noise_gives_each_group_the_gradient_of_its_own_loss_with_one_fake_pass_fewer(
    method):
  """method.share_fake_score_noise: the fake score's update in the joint phase takes the draw's
  noise levels and noise, and its forward pass at x_t = x_g + sigma n also gives the generator
  terms' D_fake. Each group's gradient is still that of its own loss with the network run
  separately (through the fake score's input for SiD, SIM and Uni-Instruct), and the phase runs
  the fake network once fewer."""
  from onestep_jax.losses.common import noised
  from onestep_jax.losses.denoising import edm_denoising_loss
  r = _joint_and_separate(method, reuse_generator_samples=True, share_fake_score_noise=True)
  assert r.handed is None
  ctx, d, x_g = r.ctx, r.d, r.x_g
  x_t = noised(x_g, d.sigma, d.noise)

  def fake_objective(p):  # the fake-score loss at the draw's noise, the network run here
    denoised = ctx.fake_denoiser(p)(x_t, d.sigma, d.labels)
    return ctx.fake_score_objective(p, r.batch, r.k_fake, x_g, d.labels,
                                    (d.sigma, d.noise, denoised))

  _assert_each_group_gets(r, jax.grad(fake_objective, has_aux=True)(r.params)[0])
  denoising = edm_denoising_loss(denoiser=ctx.fake_denoiser(r.params), x0=x_g, sigma=d.sigma,
                                 noise=d.noise, labels=d.labels, sigma_data=r.c.method.sigma_data)
  np.testing.assert_allclose(r.metrics['fake_score/denoising'], np.mean(denoising), rtol=1e-6)

  def matmuls(share):  # in the generator phase and the phase taking its samples, if any
    r.c.method.share_fake_score_noise = share
    phases = {p.name: p for p in build_method(r.c, r.data).phases}
    step = lambda p: phases['generator'].loss_fn(p, r.batch, r.key)
    if not share:
      taker = phases['fake_score_from_generator'].loss_fn
      step = lambda p: taker(p, r.batch, r.key, phases['generator'].loss_fn(p, r.batch, r.key)[2])
    return str(jax.make_jaxpr(step)(r.params)).count('dot_general')

  layers = len(jax.tree.leaves(r.params['fake_score'])) // 2  # a kernel and a bias per layer
  assert matmuls(False) - matmuls(True) == layers


def test_sharing_the_fake_score_noise_needs_the_reused_samples():
  data = get_dataset('ring8')
  c = _toy_config('sid')
  c.method.share_fake_score_noise = True
  with pytest.raises(ValueError, match='needs method.reuse_generator_samples'):
    build_method(resolve_config(c, data), data)


@pytest.mark.parametrize('fake_score_steps,share,schedule', [
    (1, False, (('generator', 1), ('fake_score_from_generator', 1))),
    (5, False, (('fake_score', 4), ('generator', 1), ('fake_score_from_generator', 1))),
    (1, True, (('generator', 1),)),
    (5, True, (('fake_score', 4), ('generator', 1)))])
def test_reused_samples_stand_in_for_one_fake_score_update(fake_score_steps, share, schedule):
  data = get_dataset('ring8')
  c = _toy_config('dmd2')
  c.method.update(reuse_generator_samples=True, share_fake_score_noise=share,
                  fake_score_steps=fake_score_steps, fake_score_warmup_steps=10)
  stages = build_method(resolve_config(c, data), data).stages
  assert stages[0].schedule == (('fake_score', 1),) and stages[0].until_step == 10
  assert stages[-1].schedule == schedule


def test_only_dmd2_reuses_the_generator_samples_by_default_and_not_on_the_ring():
  """DMD2's official loop trains the fake score on the generator turn's images, so on images it
  hands them over by default; the other methods' official loops draw twice. The ring's DMD2, at
  one fake-score update per generator update, draws twice too (configs/distill_toy2d.py)."""
  from onestep_jax.experiment.defaults import image_distill_config
  data = get_dataset('ring8')
  for method in METHODS:
    assert image_distill_config('digits', method).method.reuse_generator_samples == (
        method == 'dmd2'), method
    c = _toy_config(method)
    assert not c.method.reuse_generator_samples, method
    phases = [p.name for p in build_method(resolve_config(c, data), data).phases]
    assert 'fake_score_from_generator' not in phases, method


def test_no_fake_score_steps_is_refused_by_name():
  data = get_dataset('ring8')
  c = _toy_config('sid')
  c.method.fake_score_steps = 0
  with pytest.raises(ValueError, match='method.fake_score_steps'):
    build_method(resolve_config(c, data), data)
  c = tiny_config('distill_toy2d', 'diffratio', ratio_steps=0)  # shares the alternation
  with pytest.raises(ValueError, match="'ratio' repeats must be >= 1"):
    build_method(resolve_config(c, data), data)


def test_generator_learning_rate_ramps_up_over_its_own_updates():
  """With method.lr_generator_rampup_steps = 4, the generator's k-th update (k = 0, 1, ...) is
  min(k / 4, 1) times the update at the full rate; the fake score's rate does not ramp."""
  data = get_dataset('ring8')
  c = _toy_config('diff_instruct')
  c.method.lr_generator_rampup_steps = 4
  ramped = {g.name: g for g in build_method(resolve_config(c, data), data).groups}
  c.method.lr_generator_rampup_steps = 0
  plain = {g.name: g for g in build_method(resolve_config(c, data), data).groups}
  params = {'w': jax.numpy.ones(3)}
  grads = {'w': jax.numpy.asarray([1.0, -2.0, 0.5])}

  updates = lambda group, n: successive_updates(group.transform(), params, grads, n)

  full = updates(plain['generator'], 6)
  assert np.all(np.abs(full) > 0)
  np.testing.assert_allclose(updates(ramped['generator'], 6),
                             full * np.array([0, 0.25, 0.5, 0.75, 1, 1])[:, None], rtol=1e-6)
  np.testing.assert_array_equal(updates(ramped['fake_score'], 3), updates(plain['fake_score'], 3))
  for bad in (-1, 0.5):  # a ramp over int(0.5) = 0 steps would hold the rate at 0
    with pytest.raises(ValueError, match='whole number >= 0'):
      adam(1e-3, c.method, bad)
