"""The flow-map methods on a tiny MLP: finite losses that move the student, evaluation at 1/2/4/8
steps, and the bookkeeping groups (clock, CD's EMA target, PD's round copy) after real trainer
steps."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config
from onestep_jax.methods import build_method
from onestep_jax.methods.flow_map_config import FLOW_MAP_METHODS
from onestep_jax.train.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = get_dataset('ring8')


def _setup(method, **overrides):
  c = load_config_file(f'{ROOT}/configs/distill_toy2d.py:{method}')
  c.net.kwargs.hidden_dim = 16
  c.net.kwargs.num_layers = 1
  c.train.batch_size = 32
  c.method.update(overrides)
  return build_method(resolve_config(c, DATA), DATA)


def _batch(step=0):
  return {k: jnp.asarray(v) for k, v in DATA.get_batch(step, 32, seed=0).items()}


@pytest.mark.parametrize('method', sorted(FLOW_MAP_METHODS))
def test_loss_moves_the_student_and_students_sample_at_1_2_4_8_steps(method):
  setup = _setup(method)
  params = setup.init_params(jax.random.PRNGKey(0))
  (phase,) = setup.phases
  grads, metrics = jax.jit(jax.grad(lambda p: phase.loss_fn(p, _batch(), jax.random.PRNGKey(1)),
                                    has_aux=True))(params)
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
  norms = {k: float(sum(jnp.sum(jnp.square(l)) for l in jax.tree.leaves(g)))
           for k, g in grads.items()}
  assert 0 < norms['student'] < np.inf, norms
  if 'clock' in norms:
    assert norms['clock'] == 1.0  # the tick, and nothing else, reaches the clock
  assert [(g.model, g.nfe) for g in setup.generators] == [
      ('teacher', 35), ('student', 1), ('student', 2), ('student', 4), ('student', 8)]
  x = jax.jit(setup.generators[2].sample_fn, static_argnums=2)(params, jax.random.PRNGKey(2), 64,
                                                                None)
  assert x.shape == (64, 2) and bool(jnp.all(jnp.isfinite(x)))


def _train(setup, params, steps):
  trainer = Trainer(groups=setup.groups, phases=setup.phases, stages=setup.stages,
                    batch_size=32)
  state = trainer.init_state(params, key=jax.random.PRNGKey(3))
  get_batch = lambda step, pi, pc: DATA.get_batch(step, 32, seed=0, process_index=pi,
                                                  process_count=pc)
  history = []
  for n in range(1, steps + 1):
    state = trainer.train(state, get_batch=get_batch, num_steps=n, log_every=1, progress=False)
    history.append(jax.device_get(state.params))
  return history


def test_cd_target_is_an_ema_of_the_student():
  decay = 0.9
  setup = _setup('cd', target_decay=decay)
  params = setup.init_params(jax.random.PRNGKey(0))
  first, second = _train(setup, params, 2)
  # Step 2 pulls the target from its step-1 value towards the student it sees (the step-1 one).
  for tgt, before, student in zip(*(jax.tree.leaves(x) for x in (second['target'],
                                                                  first['target'],
                                                                  first['student']))):
    np.testing.assert_allclose(tgt, decay * before + (1 - decay) * student, rtol=1e-5,
                               atol=1e-7)
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(second['target']), jax.tree.leaves(params['student'])))
  assert moved > 0


def test_clock_counts_and_pd_copies_the_student_at_each_round():
  setup = _setup('pd', round_steps=2, teacher_steps=8)
  params = setup.init_params(jax.random.PRNGKey(0))
  history = _train(setup, params, 5)
  assert [float(h['clock']) for h in history] == [1.0, 2.0, 3.0, 4.0, 5.0]
  # A copy through SGD, prev - (prev - student), is exact up to rounding.
  same = lambda a, b: all(np.allclose(x, y, rtol=0, atol=1e-6) for x, y in zip(
      jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(history[1]['previous'], params['student'])  # round 0: the teacher's DDIM
  assert same(history[2]['previous'], history[1]['student'])  # round 1 starts at clock 2
  assert same(history[3]['previous'], history[1]['student'])
  assert same(history[4]['previous'], history[3]['student'])  # round 2 starts at clock 4
  assert not same(history[4]['previous'], history[1]['student'])
