"""Trainer behaviour: schedules and stages, clipping, EMA closed form, non-finite policy,
metrics and input validation."""
import functools
import gc
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from onestep_jax.train import mesh as mesh_lib
from onestep_jax.train import spec
from onestep_jax.train import trainer as trainer_lib
from onestep_jax.train.checkpoint import Checkpointer, NonFiniteError
from onestep_jax.train.ema import ema_beta
from onestep_jax.train.metrics import MetricWriter, read_metrics
from onestep_jax.train.trainer import Trainer

BATCH = 16


def _ascend(name):
  """Loss -sum(p): every SGD(lr=1) update adds exactly 1 to each entry of group `name`.

  Phase 'b' also reads the batch, so a NaN batch poisons it (and only it).
  """
  def loss_fn(params, batch, key):
    del key
    loss = -jnp.sum(params[name]) - jnp.sum(params['frozen'])
    if name == 'b':
      loss = loss + 0.0 * jnp.sum(batch['x'])
    return loss, {'mean': jnp.mean(params[name])}
  return loss_fn


def _counting_trainer(*, a=None, b=None, stages=None, nonfinite='skip', parallel_compile=False):
  groups = [spec.Group('frozen', trainable=False),
            a or spec.Group('a', trainable=True, optimizer=optax.sgd(1.0)),
            b or spec.Group('b', trainable=True, optimizer=optax.sgd(1.0))]
  phases = [spec.Phase('a', _ascend('a'), updates=('a',)),
            spec.Phase('b', _ascend('b'), updates=('b',))]
  stages = stages or [spec.Stage([('a', 1)])]
  trainer = Trainer(groups=groups, phases=phases, stages=stages, batch_size=BATCH,
                    nonfinite=nonfinite, parallel_compile=parallel_compile)
  params = {'frozen': jnp.ones(4), 'a': jnp.zeros(4), 'b': jnp.zeros(4)}
  return trainer, trainer.init_state(params, key=jax.random.PRNGKey(0))


def _zeros_batch(step, process_index, process_count, *, nan_at=None):
  del process_index
  value = np.nan if step == nan_at else 0.0
  return {'x': np.full((BATCH // process_count, 1), value, np.float32)}


def test_schedule_ratios_and_stage_switch():
  stages = [spec.Stage([('a', 1)], until_step=2), spec.Stage([('a', 5), ('b', 1)])]
  trainer, state = _counting_trainer(stages=stages)
  state = trainer.train(state, get_batch=_zeros_batch, num_steps=4, progress=False)
  np.testing.assert_array_equal(state.params['a'], np.full(4, 2 * 1 + 2 * 5))
  np.testing.assert_array_equal(state.params['b'], np.full(4, 2))
  np.testing.assert_array_equal(state.frozen['frozen'], np.ones(4))
  assert {k: int(v) for k, v in state.updates.items()} == {'a': 12, 'b': 2}
  assert int(state.step) == 4


def test_parallel_compile_compiles_a_stages_new_phases_together_and_trains_the_same(monkeypatch):
  """The phases a stage adds and the end of step are compiled at that stage's first step, at the
  same time in threads (each compile waits at a barrier for the other: a sequential compile
  would time out); a stage adding one phase compiles it alone. The training is unchanged."""
  compile_fn = jax.stages.Lowered.compile
  barrier = threading.Barrier(2, timeout=60)
  threads = []

  def compile_and_record(self, *args, **kwargs):
    threads.append(threading.current_thread())
    if threading.current_thread() is not threading.main_thread():
      barrier.wait()
    return compile_fn(self, *args, **kwargs)

  stages = [spec.Stage([('a', 1)], until_step=2), spec.Stage([('a', 5), ('b', 1)])]
  trainer, state = _counting_trainer(stages=stages, parallel_compile=True)
  monkeypatch.setattr(jax.stages.Lowered, 'compile', compile_and_record)
  batch = mesh_lib.global_batch(_zeros_batch(0, 0, 1), trainer.mesh)
  state, _ = trainer.train_step(state, batch, step=0)
  assert set(trainer._executables) == {'a', None}
  assert len(threads) == 2 and threading.main_thread() not in threads
  assert threads[0] is not threads[1]
  state, _ = trainer.train_step(state, batch, step=1)
  state, _ = trainer.train_step(state, batch, step=2)
  assert set(trainer._executables) == {'a', 'b', None}
  assert len(threads) == 3 and threads[2] is threading.main_thread()  # 'b' alone, at its run
  state = trainer.train(state, get_batch=_zeros_batch, num_steps=4, progress=False)
  np.testing.assert_array_equal(state.params['a'], np.full(4, 2 * 1 + 2 * 5))
  np.testing.assert_array_equal(state.params['b'], np.full(4, 2))
  assert int(state.step) == 4


def _handing_over_trainer(stages, parallel_compile=False):
  """Phase 'a' (run as _ascend('a')) hands over the batch plus sum(a) before its update, and
  that sum; phase 'b' reports what it took."""
  def give(params, batch, key):
    loss, metrics = _ascend('a')(params, batch, key)
    total = jnp.sum(params['a'])
    return loss, metrics, {'x': batch['x'][:, 0] + total, 'total': total}

  def take(params, batch, key, handed):
    loss, _ = _ascend('b')(params, batch, key)
    return loss, {'x': jnp.mean(handed['x']), 'total': handed['total']}

  groups = [spec.Group('frozen', trainable=False)] + [
      spec.Group(n, trainable=True, optimizer=optax.sgd(1.0)) for n in 'ab']
  phases = [spec.Phase('a', give, updates=('a',), gives=True),
            spec.Phase('b', take, updates=('b',), takes='a')]
  trainer = Trainer(groups=groups, phases=phases, stages=stages, batch_size=BATCH,
                    parallel_compile=parallel_compile)
  params = {'frozen': jnp.ones(4), 'a': jnp.zeros(4), 'b': jnp.zeros(4)}
  return trainer, trainer.init_state(params, key=jax.random.PRNGKey(0))


@pytest.mark.parametrize('parallel_compile', [False, True])
def test_a_phase_takes_what_its_giver_last_handed_over_in_the_same_step(parallel_compile):
  """'a' runs twice per step and adds 4 to sum(a) each time; 'b' takes the second run's
  hand-over (sum(a) before that run: 4, then 12), in the step it was made, in both ways of
  compiling; the batch-sized leaf is split like the batch, the scalar replicated."""
  stages = [spec.Stage([('a', 2), ('b', 1)])]
  trainer, state = _handing_over_trainer(stages, parallel_compile)
  for step, total in enumerate((4.0, 12.0)):
    batch = mesh_lib.global_batch({'x': np.full((BATCH, 1), step, np.float32)}, trainer.mesh)
    state, metrics = trainer.train_step(state, batch, step=step)
    assert float(metrics['b']['total']) == total
    assert float(metrics['b']['x']) == step + total
  np.testing.assert_array_equal(state.params['b'], np.full(4, 2))
  shardings = trainer.handover_shardings({'x': jnp.zeros(BATCH), 'total': jnp.zeros(())})
  assert shardings == {'x': mesh_lib.batch_sharding(trainer.mesh),
                       'total': mesh_lib.replicated(trainer.mesh)}


def test_handing_over_is_checked():
  with pytest.raises(ValueError, match="Stage 0 runs phase 'b' without running 'a', whose "
                                       'arrays it takes, before it'):
    _handing_over_trainer([spec.Stage([('b', 1), ('a', 1)])])
  groups = [spec.Group('g', trainable=True, optimizer=optax.sgd(1.0))]
  phases = [spec.Phase('p', _ascend('g'), updates=('g',)),
            spec.Phase('q', _ascend('g'), updates=('g',), takes='p')]
  with pytest.raises(ValueError, match=r"takes from 'p', which is not a phase with gives=True; "
                                       r'those are \[\]'):
    Trainer(groups=groups, phases=phases, stages=[spec.Stage([('p', 1)])], batch_size=BATCH)
  with pytest.raises(ValueError, match="Phase 'p' cannot take what it hands over itself"):
    spec.Phase('p', _ascend('g'), updates=('g',), gives=True, takes='p')
  giver = spec.Phase('p', lambda p, b, k: (-jnp.sum(p['g']), {}), updates=('g',), gives=True)
  trainer = Trainer(groups=groups, phases=[giver], stages=[spec.Stage([('p', 1)])],
                    batch_size=BATCH)
  state = trainer.init_state({'g': jnp.zeros(4)}, key=jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r"Phase 'p': loss_fn must return \(loss, metrics, "
                                       r'handed\), got 2 values'):
    trainer.train(state, get_batch=_zeros_batch, num_steps=1, progress=False)


def test_clip_norm_bounds_the_update():
  a = spec.Group('a', trainable=True, optimizer=optax.sgd(1.0), clip_norm=0.5)
  trainer, state = _counting_trainer(a=a)
  state, metrics = trainer.train_step(state, mesh_lib.global_batch(_zeros_batch(0, 0, 1),
                                                             trainer.mesh), step=0)
  np.testing.assert_allclose(state.params['a'], np.full(4, 0.25), rtol=1e-6)  # norm 0.5.
  np.testing.assert_allclose(metrics['a']['grad_norm/a'], 2.0, rtol=1e-6)  # before clipping.
  np.testing.assert_allclose(metrics['a']['mean'], 0.0)  # loss_fn metrics, pre-update.


def test_gc_paused_blocks_collections_and_restores_the_collector(monkeypatch):
  """No collection starts inside `_gc_paused`, even at threshold 1; after it the collector is on
  again, or still off if it was off. The trainer traces and lowers every program inside it."""
  started = []  # one entry per collection that starts
  callback = lambda phase, info: started.append(info['generation']) if phase == 'start' else None
  threshold = gc.get_threshold()
  gc.callbacks.append(callback)
  gc.set_threshold(1)
  try:
    with trainer_lib._gc_paused():
      before = len(started)
      assert not gc.isenabled()
      cycles = [[] for _ in range(100)]
      for c in cycles:
        c.append(c)
      assert len(started) == before
    assert gc.isenabled()
    cycles = [[] for _ in range(100)]
    assert len(started) > before  # the callback does see collections when the GC is on.
    gc.disable()
    with trainer_lib._gc_paused():
      pass
    assert not gc.isenabled()
  finally:
    gc.enable()
    gc.set_threshold(*threshold)
    gc.callbacks.remove(callback)

  entered = []
  paused = trainer_lib._gc_paused
  monkeypatch.setattr(trainer_lib, '_gc_paused', lambda: entered.append(1) or paused())
  trainer, state = _counting_trainer()
  trainer.train_step(state, mesh_lib.global_batch(_zeros_batch(0, 0, 1), trainer.mesh), step=0)
  assert len(entered) == 2  # phase 'a' and the end of step.


def test_ema_matches_closed_form():
  """Params after step t are t; constant beta gives ema_T = T - beta (1 - beta^T) / (1 - beta)."""
  halflife, steps = 64.0, 5
  a = spec.Group('a', trainable=True, optimizer=optax.sgd(1.0), ema_halflife_nimg=halflife)
  trainer, state = _counting_trainer(a=a)
  state = trainer.train(state, get_batch=_zeros_batch, num_steps=steps, progress=False)
  beta = 0.5 ** (BATCH / halflife)
  expected = steps - beta * (1 - beta**steps) / (1 - beta)
  np.testing.assert_allclose(state.ema['a'], np.full(4, expected), rtol=1e-6)
  assert set(state.ema) == {'a'}


def test_ema_rampup_follows_edm():
  # First step: no samples seen yet, so the half-life is 0 and the EMA copies the params.
  a = spec.Group('a', trainable=True, optimizer=optax.sgd(1.0), ema_halflife_nimg=1e6,
                 ema_rampup_ratio=0.05)
  trainer, state = _counting_trainer(a=a)
  state = trainer.train(state, get_batch=_zeros_batch, num_steps=1, progress=False)
  np.testing.assert_array_equal(state.ema['a'], state.params['a'])
  # Later: half-life min(1e6, 0.05 * nimg).
  np.testing.assert_allclose(ema_beta(nimg=1000, batch_size=16, halflife_nimg=1e6,
                                      rampup_ratio=0.05), 0.5 ** (16 / 50), rtol=1e-6)
  np.testing.assert_allclose(ema_beta(nimg=1e9, batch_size=16, halflife_nimg=1e6,
                                      rampup_ratio=0.05), 0.5 ** (16 / 1e6), rtol=1e-6)


def test_nonfinite_skip_keeps_params_and_counts():
  adam_b = spec.Group('b', trainable=True, optimizer=optax.adam(0.1))
  trainer, state = _counting_trainer(b=adam_b, stages=[spec.Stage([('a', 1), ('b', 1)])])
  state = trainer.train(state, get_batch=_zeros_batch, num_steps=2, progress=False)
  b_before = jax.device_get((state.params['b'], state.opt_state['b']))
  state, metrics = trainer.train_step(state, mesh_lib.global_batch(
      _zeros_batch(2, 0, 1, nan_at=2), trainer.mesh), step=2)
  assert np.isnan(metrics['b']['loss'])
  chex.assert_trees_all_equal(jax.device_get((state.params['b'], state.opt_state['b'])),
                              b_before)
  np.testing.assert_array_equal(state.params['a'], np.full(4, 3.0))  # 'a' still updated.
  assert {k: int(v) for k, v in state.nonfinite.items()} == {'a': 0, 'b': 1}
  assert state.first_nonfinite.tolist() == [2, 1]
  assert trainer.check_finite(state) == {'a': 0, 'b': 1}  # 'skip' does not raise.


def test_nonfinite_stop_raises_and_keeps_last_good_checkpoint(tmp_path):
  trainer, state = _counting_trainer(stages=[spec.Stage([('a', 1), ('b', 1)])],
                                     nonfinite='stop')
  get_batch = functools.partial(_zeros_batch, nan_at=3)
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(NonFiniteError, match="phase 'b' at step 3"):
      trainer.train(state, get_batch=get_batch, num_steps=10, checkpointer=ckpt,
                    save_every=1, log_every=1, progress=False)
    assert ckpt.latest_step() == 3
    np.testing.assert_array_equal(ckpt.restore(state).params['b'], np.full(4, 3.0))


def test_metrics_jsonl(tmp_path):
  stages = [spec.Stage([('a', 1)], until_step=2), spec.Stage([('a', 1), ('b', 1)])]
  trainer, state = _counting_trainer(stages=stages)
  writer = MetricWriter(tmp_path / 'metrics.jsonl')
  trainer.train(state, get_batch=_zeros_batch, num_steps=4, log_every=2, metric_writer=writer,
                progress=False)
  records = read_metrics(tmp_path / 'metrics.jsonl')
  assert [r['step'] for r in records] == [2, 4]
  assert 'b/loss' not in records[0]  # stage 0 runs phase 'a' only.
  # Latest run of each phase, evaluated before its update: a = 3, b = 1 at the last step.
  last = records[1]
  assert (last['a/loss'], last['a/mean'], last['b/loss'], last['b/mean']) == (-16, 3, -8, 1)
  assert last['a/grad_norm/a'] == 2.0 and last['nonfinite/b'] == 0
  assert last['samples_per_sec'] == pytest.approx(BATCH * last['steps_per_sec'])


def test_log_holds_each_windows_largest_gradient_norm_and_how_often_the_clip_acted(tmp_path):
  # Loss -x * sum(a) over 4 entries: the gradient norm is 2 |x|, x set per step by the batch.
  # Phase 'a' runs twice a step (the same batch), so each window of 2 steps has 4 updates.
  scale = {0: 1.0, 1: 3.0, 2: 0.5, 3: 2.0}
  loss_fn = lambda p, batch, key: (-jnp.mean(batch['x']) * jnp.sum(p['a']), {})
  trainer = Trainer(
      groups=[spec.Group('a', trainable=True, optimizer=optax.sgd(0.0), clip_norm=3.0),
              spec.Group('b', trainable=True, optimizer=optax.sgd(0.0))],
      phases=[spec.Phase('a', loss_fn, updates=('a',)),
              spec.Phase('b', lambda p, batch, key: (-jnp.sum(p['b']), {}), updates=('b',))],
      stages=[spec.Stage([('a', 2), ('b', 1)])], batch_size=BATCH)
  state = trainer.init_state({'a': jnp.zeros(4), 'b': jnp.zeros(4)}, key=jax.random.PRNGKey(0))
  get_batch = lambda step, *_: {'x': np.full((BATCH, 1), scale[step], np.float32)}
  writer = MetricWriter(tmp_path / 'metrics.jsonl')
  trainer.train(state, get_batch=get_batch, num_steps=4, log_every=2, metric_writer=writer,
                progress=False)
  first, last = read_metrics(tmp_path / 'metrics.jsonl')
  # Norms 2, 2, 6, 6 then 1, 1, 4, 4; the clip at 3 acts on the updates of norm 6 and 4.
  assert (first['a/grad_norm/a'], first['a/grad_norm_max/a'], first['a/clipped/a']) == (6, 6, 0.5)
  assert (last['a/grad_norm/a'], last['a/grad_norm_max/a'], last['a/clipped/a']) == (4, 4, 0.5)
  assert last['b/grad_norm_max/b'] == 2.0 and 'b/clipped/b' not in last  # no clip_norm there


def test_validation_errors():
  trainer, state = _counting_trainer()
  with pytest.raises(ValueError, match=r"leaf \['x'\] of shape \(3, 1\); expected 16 rows"):
    trainer.train(state, get_batch=lambda *_: {'x': np.zeros((3, 1))}, num_steps=1,
                  progress=False)
  with pytest.raises(ValueError, match=r"expected \['a', 'b', 'frozen'\]"):
    trainer.init_state({'a': jnp.zeros(4)}, key=jax.random.PRNGKey(0))
  groups = [spec.Group('g', trainable=True, optimizer=optax.sgd(1.0)),
            spec.Group('t', trainable=False)]
  phase = spec.Phase('p', _ascend('g'), updates=('g',))
  kwargs = dict(groups=groups, phases=[phase], batch_size=BATCH)
  with pytest.raises(ValueError, match=r"choose one of \['skip', 'stop'\]"):
    Trainer(stages=[spec.Stage([('p', 1)])], nonfinite='ignore', **kwargs)
  with pytest.raises(ValueError, match=r"unknown phase 'q'; phases: \['p'\]"):
    Trainer(stages=[spec.Stage([('q', 1)])], **kwargs)
  stages = [spec.Stage([('p', 1)])]
  with pytest.raises(TypeError, match="parallel_compile must be True or False, got 'yes'"):
    Trainer(stages=stages, parallel_compile='yes', **kwargs)
  with pytest.raises(TypeError, match='packed_update must be True or False, got 1'):
    Trainer(stages=stages, packed_update=1, **kwargs)
  with pytest.raises(ValueError, match=r'batch_size must be an integer >= 1, got 16.0'):
    Trainer(stages=stages, **{**kwargs, 'batch_size': 16.0})
  with pytest.raises(ValueError, match=r'fsdp_min_size must be an integer >= 0, got -1'):
    Trainer(stages=stages, fsdp_min_size=-1, **kwargs)
  with pytest.raises(ValueError, match=r"'t', which is not a trainable group; .*\['g'\]"):
    Trainer(groups=groups, phases=[spec.Phase('p', _ascend('t'), updates=('t',))],
            stages=[spec.Stage([('p', 1)])], batch_size=BATCH)
  with pytest.raises(ValueError, match='No stage covers step 5'):
    spec.stage_at([spec.Stage([('p', 1)], until_step=5)], 5)
  with pytest.raises(ValueError, match="Trainable group 'g' needs an optimizer"):
    spec.Group('g', trainable=True)
