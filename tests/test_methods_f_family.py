"""f-distill, Uni-Instruct and DiffRatio on a tiny MLP: finite losses, each phase changes exactly
its groups, DiffRatio's generator reads neither teacher nor fake score, and config errors name
the fix."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config
from onestep_jax.methods import build_method
from onestep_jax.methods.one_step import LEAD_IN
from onestep_jax.train.spec import stage_at
from train_helpers.phases import check_phase_gradients, groups_changed_by_each_phase

ROOT = pathlib.Path(__file__).resolve().parents[1]
GROUPS = {  # trainable groups of each method
    'fdistill': {'generator', 'fake_score', 'discriminator'},
    'uni_instruct': {'generator', 'fake_score', 'discriminator'},
    'diffratio': {'generator', 'ratio'},
}


def _toy_config(method, **method_fields):
  c = load_config_file(f'{ROOT}/configs/distill_toy2d.py:{method}')
  c.net.kwargs.hidden_dim = 16
  c.net.kwargs.num_layers = 1
  c.method['ratio_width' if method == 'diffratio' else 'discriminator_width'] = 32
  c.method.update(method_fields)
  c.train.batch_size = 32
  return c


def _setup(method, **method_fields):
  data = get_dataset('ring8')
  return data, build_method(resolve_config(_toy_config(method, **method_fields), data), data)


@pytest.mark.parametrize('method,divergence,fields', [
    ('fdistill', 'jensen_shannon', {}), ('uni_instruct', 'forward_kl', {}),
    ('uni_instruct', 'neyman_chi2', {'flat_weight_outside_clip': True, 'ratio_range': (0.5, 2.0)}),
    ('diffratio', 'jensen_shannon', {})])
def test_each_phase_has_finite_loss_and_gradients_for_its_groups(method, divergence, fields,
                                                                 monkeypatch):
  """Each phase's loss is finite and moves every group it updates, and no other phase moves the
  generator. DiffRatio runs with an analytic teacher that returns NaN: its gradients come from
  the classifier alone (the teacher only samples itself for comparison)."""
  data, setup = _setup(method, divergence=divergence, **fields)
  params = setup.init_params(jax.random.PRNGKey(0))
  batch = {k: jnp.asarray(v) for k, v in data.get_batch(0, 32, seed=0).items()}
  if method == 'diffratio':
    assert 'fake_score' not in params and 'teacher' not in params  # analytic: no weights
    monkeypatch.setattr(type(data.mixture), 'denoise',
                        lambda self, x, sigma, **kw: jnp.full_like(x, jnp.nan))
  metrics = check_phase_gradients(setup, params, batch)
  assert {g.name for g in setup.groups if g.trainable} == GROUPS[method]
  assert {u for p in setup.phases for u in p.updates} == GROUPS[method]
  if method != 'diffratio':
    assert 'ratio_std' in metrics['generator']  # the divergence's weights read the discriminator


def test_diffratio_run_updates_only_the_scheduled_groups():
  """Through the trainer, each of DiffRatio's phases alone for two steps changes exactly the
  groups it updates (the fake-score layout is tested in tests/test_methods_one_step.py)."""
  data, setup = _setup('diffratio')
  params = setup.init_params(jax.random.PRNGKey(0))
  changed = groups_changed_by_each_phase(setup, data, params)
  for phase in setup.phases:
    assert changed[phase.name] == set(phase.updates), phase.name


@pytest.mark.parametrize('method,divergence', [('fdistill', 'forward_kl'),
                                               ('uni_instruct', 'pearson_chi2')])
def test_reverse_kl_lead_in_runs_the_reverse_kl_loss_between_warm_up_and_divergence(method,
                                                                                    divergence):
  """With method.reverse_kl_steps = 7 the generator's phase after the fake-score warm-up is the
  reverse-KL method's generator phase (same loss and metrics on the same inputs) for 7 steps,
  then the divergence's own."""
  data, setup = _setup(method, divergence=divergence, reverse_kl_steps=7,
                       fake_score_warmup_steps=3)
  _, reverse_kl = _setup(method, divergence='reverse_kl')
  _, plain = _setup(method, divergence=divergence)
  schedule = [dict(stage_at(setup.stages, step).schedule) for step in (2, 3, 9, 10)]
  assert [set(s) for s in schedule] == [{'fake_score'}, {'fake_score', LEAD_IN},
                                        {'fake_score', LEAD_IN}, {'fake_score', 'generator'}]
  phases = {p.name: p for p in setup.phases}
  params = setup.init_params(jax.random.PRNGKey(0))
  batch = {k: jnp.asarray(v) for k, v in data.get_batch(0, 32, seed=0).items()}
  key = jax.random.PRNGKey(3)
  lead_loss, lead_metrics = phases[LEAD_IN].loss_fn(params, batch, key)
  rkl_loss, rkl_metrics = {p.name: p for p in reverse_kl.phases}['generator'].loss_fn(
      params, batch, key)
  own_loss, own_metrics = phases['generator'].loss_fn(params, batch, key)
  plain_loss, _ = {p.name: p for p in plain.phases}['generator'].loss_fn(params, batch, key)
  np.testing.assert_allclose(lead_loss, rkl_loss, rtol=1e-6)
  np.testing.assert_allclose(own_loss, plain_loss, rtol=1e-6)
  assert set(lead_metrics) == set(rkl_metrics) and 'ratio_std' in own_metrics
  # The discriminator starts near r = 1, so the two losses differ little, but they differ.
  assert abs(float(own_loss) - float(lead_loss)) > 1e-5 * abs(float(lead_loss))


def test_reverse_kl_lead_in_reuses_its_samples_for_the_fake_score_too():
  """With method.reuse_generator_samples the lead-in phase, like the generator's, hands its
  samples to a fake-score and discriminator update that stands in for one of the fake-score
  updates (with share_fake_score_noise too, it makes that update itself)."""
  _, setup = _setup('fdistill', divergence='forward_kl', reverse_kl_steps=7,
                    fake_score_warmup_steps=3, fake_score_steps=2, reuse_generator_samples=True)
  assert [stage_at(setup.stages, step).schedule for step in (2, 3, 10)] == [
      (('fake_score', 1),),
      (('fake_score', 1), (LEAD_IN, 1), (f'fake_score_from_{LEAD_IN}', 1)),
      (('fake_score', 1), ('generator', 1), ('fake_score_from_generator', 1))]
  fake = {'fake_score', 'discriminator'}
  assert {p.name: (set(p.updates), p.takes) for p in setup.phases} == {
      'fake_score': (fake, None), LEAD_IN: ({'generator'}, None),
      'generator': ({'generator'}, None), f'fake_score_from_{LEAD_IN}': (fake, LEAD_IN),
      'fake_score_from_generator': (fake, 'generator')}
  _, setup = _setup('fdistill', divergence='forward_kl', reverse_kl_steps=7,
                    fake_score_warmup_steps=3, fake_score_steps=2, reuse_generator_samples=True,
                    share_fake_score_noise=True)
  assert stage_at(setup.stages, 3).schedule == (('fake_score', 1), (LEAD_IN, 1))
  updates = {p.name: set(p.updates) for p in setup.phases}
  assert updates[LEAD_IN] == updates['generator'] == {'generator'} | fake


def test_config_errors_name_the_fix():
  with pytest.raises(ValueError, match='unknown divergence.*jensen_shannon'):
    _setup('fdistill', divergence='kl')
  with pytest.raises(ValueError, match='unknown divergence'):
    _setup('diffratio', divergence='kl')
  with pytest.raises(ValueError, match='reverse_kl_steps must be >= 0'):
    _setup('uni_instruct', reverse_kl_steps=-5)
  for method in ('fdistill', 'uni_instruct'):  # at build time, not after the warm-up
    with pytest.raises(ValueError, match='method.weight_bins must be >= 0'):
      _setup(method, weight_bins=-1)
  with pytest.raises(ValueError, match=r'method.karras_index_range must be \(lo, hi\)'):
    _setup('uni_instruct', karras_index_range=(900, 800))
  with pytest.raises(ValueError, match=r'method.karras_index_range must be \(lo, hi\)'):
    _setup('uni_instruct', karras_index_range=(100, 200, 300))
  for method in ('fdistill', 'uni_instruct', 'diffratio'):  # not log(0) mid-run, nor silence
    for bad in ((2.0, 0.5), (0.0, 2.0), (None,), (0.5, 1.0, 2.0)):
      with pytest.raises(ValueError, match=r'method.ratio_range must be \(lo, hi\) with 0 < lo'):
        _setup(method, ratio_range=bad)
  for fields in ({'ratio_range': None}, {'divergence': 'reverse_kl'}):  # it would do nothing
    with pytest.raises(ValueError, match='flat_weight_outside_clip needs a clipped density'):
      _setup('uni_instruct', flat_weight_outside_clip=True, **fields)
  with pytest.raises(ValueError, match='gan_weight_discriminator > 0'):
    _setup('uni_instruct', gan_weight_discriminator=0.0)
  # Reverse KL needs no ratio, so no discriminator either.
  _, setup = _setup('uni_instruct', divergence='reverse_kl', gan_weight_discriminator=0.0,
                    gan_weight_generator=0.0)
  assert {g.name for g in setup.groups if g.trainable} == {'generator', 'fake_score'}


def _toy_method(variant):
  return load_config_file(f'{ROOT}/configs/distill_toy2d.py:{variant}').method


def test_a_divergence_in_the_config_string_brings_its_ring_settings():
  toy = _toy_method  # the method section of configs/distill_toy2d.py:<variant>
  plain, tuned = toy('uni_instruct'), toy('uni_instruct:neyman_chi2,ring8')
  assert (plain.divergence, tuned.divergence) == ('forward_kl', 'neyman_chi2')
  assert (tuned.ratio_range, tuned.weight_bins, tuned.flat_weight_outside_clip,
          tuned.fake_score_steps) == ((0.67, 1.5), 10, True, 2)
  assert (plain.ratio_range, plain.weight_bins, plain.flat_weight_outside_clip,
          plain.fake_score_steps) == ((0.1, 20.0), 0, False, 1)
  assert tuned.clip_norm == plain.clip_norm == 5.0  # the method's ring settings stay
  forward = toy('uni_instruct:forward_kl')  # a divergence with no settings of its own
  assert forward.to_dict() == plain.to_dict()
  assert toy('fdistill:neyman_chi2').ratio_range == (0.5, 2.0)
  digits = load_config_file(f'{ROOT}/configs/distill_digits.py:diffratio:jeffreys').method
  assert digits.divergence == 'jeffreys'
  with pytest.raises(ValueError, match=r"'sid:neyman_chi2': only \['diffratio', 'fdistill', "
                     r"'uni_instruct'\] take a divergence"):
    toy('sid:neyman_chi2')
  with pytest.raises(ValueError, match="unknown method 'nope'; valid:.*uni_instruct"):
    toy('nope:neyman_chi2')
  with pytest.raises(ValueError, match="unknown divergence 'chi2'; valid:.*neyman_chi2"):
    load_config_file(f'{ROOT}/configs/distill_fashion_mnist.py:fdistill:chi2')
