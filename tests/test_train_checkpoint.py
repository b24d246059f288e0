"""Checkpoints: exact resume, teacher identity, keep-N, NaN guard, SIGTERM."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from onestep_jax.train.checkpoint import (Checkpointer, NonFiniteError, latest_saved_step,
                                         params_fingerprint)
from onestep_jax.train import spec
from onestep_jax.train.trainer import Trainer
from train_helpers import toy

SCRIPT = pathlib.Path(__file__).parent / 'train_helpers' / 'run_toy.py'


@pytest.fixture(scope='module')
def trainer():
  """One toy trainer per module, so its phases compile once."""
  return toy.make_trainer()


def _init(trainer):
  return trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(0))


def _perturbed_template(trainer):
  """A template whose trainable values and key differ from the run's: restore must replace them."""
  params = toy.init_params()
  params['generator'] = jax.tree.map(lambda x: x + 1.0, params['generator'])
  return trainer.init_state(params, key=jax.random.PRNGKey(123))


def test_resume_is_exact(tmp_path, trainer):
  full = toy.flat_state(trainer.train(_init(trainer), get_batch=toy.get_batch, num_steps=5,
                                      progress=False))
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    trainer.train(_init(trainer), get_batch=toy.get_batch, num_steps=3, checkpointer=ckpt,
                  progress=False)
  trainer = toy.make_trainer()  # new Trainer, new checkpoint manager.
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    state = ckpt.restore(_perturbed_template(trainer))
    assert int(state.step) == 3
    resumed = toy.flat_state(trainer.train(state, get_batch=toy.get_batch, num_steps=5,
                                           checkpointer=ckpt, progress=False))
    assert ckpt.all_steps() == [3, 5]
  assert full.keys() == resumed.keys()
  for k in full:  # params, EMA, optimizer states, RNG, step and phase counters.
    np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)


def _trainable_only_trainer():
  """The toy problem with its teacher fixed inside the losses: every group is checkpointed."""
  teacher = toy.init_params()['teacher']
  with_teacher = lambda loss: lambda p, b, k: loss({**p, 'teacher': teacher}, b, k)
  groups = [g for g in toy.make_trainer().groups.values() if g.trainable]
  phases = [spec.Phase('critic', with_teacher(toy.critic_loss), updates=('critic',)),
            spec.Phase('generator', with_teacher(toy.generator_loss), updates=('generator',),
                       gives=True)]  # nothing takes it
  return Trainer(groups=groups, phases=phases,
                 stages=[spec.Stage([('critic', 2), ('generator', 1)])], batch_size=toy.BATCH)


def _trainable_params(key):
  params = toy.init_params()
  del params['teacher']
  return jax.tree.map(lambda x: x + jax.random.normal(key, x.shape), params)


def test_a_state_template_initialises_nothing_and_restores_exactly(tmp_path):
  trainer = _trainable_only_trainer()
  straight = trainer.init_state(_trainable_params(jax.random.PRNGKey(3)), key=jax.random.PRNGKey(4))
  template = trainer.state_template(_trainable_params, jax.random.PRNGKey(3),
                                    key=jax.random.PRNGKey(4))
  assert jax.tree.structure(template) == jax.tree.structure(straight)
  for t, x in zip(jax.tree.leaves(template), jax.tree.leaves(straight)):
    assert isinstance(t, jax.ShapeDtypeStruct)
    assert (t.shape, t.dtype, t.sharding) == (x.shape, x.dtype, x.sharding)
  full = toy.flat_state(trainer.train(straight, get_batch=toy.get_batch, num_steps=4,
                                      progress=False))
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    trainer.train(trainer.init_state(_trainable_params(jax.random.PRNGKey(3)),
                                     key=jax.random.PRNGKey(4)),
                  get_batch=toy.get_batch, num_steps=2, checkpointer=ckpt, progress=False)
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    state = ckpt.restore(template)
    resumed = toy.flat_state(trainer.train(state, get_batch=toy.get_batch, num_steps=4,
                                           progress=False))
  for k in full:
    np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)


def test_a_state_template_makes_only_the_frozen_groups_and_resumes_exactly(tmp_path, trainer):
  straight = _init(trainer)
  template = trainer.state_template(lambda key: toy.init_params(), jax.random.PRNGKey(7),
                                    key=jax.random.PRNGKey(0))
  for t, x in zip(jax.tree.leaves(template.checkpoint_items()),
                  jax.tree.leaves(straight.checkpoint_items())):
    assert isinstance(t, jax.ShapeDtypeStruct)
    assert (t.shape, t.dtype, t.sharding) == (x.shape, x.dtype, x.sharding)
  assert jax.tree.structure(template.frozen) == jax.tree.structure(straight.frozen)
  for t, x in zip(jax.tree.leaves(template.frozen), jax.tree.leaves(straight.frozen)):
    np.testing.assert_array_equal(t, x)
    assert t.sharding == x.sharding
  full = toy.flat_state(trainer.train(straight, get_batch=toy.get_batch, num_steps=5,
                                      progress=False))
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    trainer.train(_init(trainer), get_batch=toy.get_batch, num_steps=3, checkpointer=ckpt,
                  progress=False)
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    resumed = toy.flat_state(trainer.train(ckpt.restore(template), get_batch=toy.get_batch,
                                           num_steps=5, progress=False))
  for k in full:
    np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)


def test_a_state_template_checks_the_groups():
  with pytest.raises(ValueError, match='expected'):
    _trainable_only_trainer().state_template(lambda key: toy.init_params(),
                                             jax.random.PRNGKey(0), key=jax.random.PRNGKey(0))


def test_a_checkpoint_of_another_network_is_refused_with_a_message_and_kept(tmp_path, trainer):
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    ckpt.save(_init(trainer))
  wider = toy.init_params()
  wider['generator'] = {'w1': np.zeros((toy.DIM, toy.HIDDEN + 4), np.float32),
                        'b1': np.zeros(toy.HIDDEN + 4, np.float32),
                        'w2': np.zeros((toy.HIDDEN + 4, toy.DIM), np.float32),
                        'b2': np.zeros(toy.DIM, np.float32)}
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    with pytest.raises(ValueError, match='another network'):
      ckpt.restore(toy.make_trainer().init_state(wider, key=jax.random.PRNGKey(0)))
    assert ckpt.all_steps() == [0]  # not set aside as broken
  assert sorted(os.listdir(tmp_path)) == ['0']


def test_keep_n_and_periodic_saves(tmp_path, trainer):
  with Checkpointer(tmp_path, teacher_identity='toy', max_to_keep=2) as ckpt:
    trainer.train(_init(trainer), get_batch=toy.get_batch, num_steps=7, checkpointer=ckpt,
                  save_every=2, progress=False)
    assert ckpt.all_steps() == [6, 7]
  assert not list(tmp_path.glob('*tmp*'))


def test_latest_saved_step_reads_without_creating(tmp_path, trainer):
  """The runner asks before its Checkpointer exists (to preload the stage's phases)."""
  missing = tmp_path / 'missing'
  assert latest_saved_step(missing) is None and not missing.exists()
  with Checkpointer(tmp_path, teacher_identity='toy', max_to_keep=2) as ckpt:
    trainer.train(_init(trainer), get_batch=toy.get_batch, num_steps=5, checkpointer=ckpt,
                  save_every=2, progress=False)
  (tmp_path / '7.broken').mkdir()  # a step moved aside by a failed restore is not a checkpoint
  assert latest_saved_step(tmp_path) == 5


def test_teacher_mismatch_is_refused(tmp_path, trainer):
  state = _init(trainer)
  identity = f'teacher.npz:{params_fingerprint(toy.init_params()["teacher"])}'
  with Checkpointer(tmp_path, teacher_identity=identity) as ckpt:
    ckpt.save(state)
  other = f'teacher.npz:{params_fingerprint(toy.init_params(seed=1)["teacher"])}'
  assert other != identity
  with Checkpointer(tmp_path, teacher_identity=other) as ckpt:
    with pytest.raises(ValueError, match='refusing to resume with a different teacher'):
      ckpt.restore(state)


def test_restore_without_checkpoint_names_directory(tmp_path, trainer):
  with Checkpointer(tmp_path / 'empty') as ckpt:
    with pytest.raises(FileNotFoundError, match='empty'):
      ckpt.restore(_init(trainer))


def test_nan_state_is_not_checkpointed(tmp_path, trainer):
  state = _init(trainer)
  good = toy.flat_state(state)
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    ckpt.save(state)
    bad = state.replace(step=state.step + 1, params={
        **state.params, 'critic': jax.tree.map(lambda x: x * np.nan, state.params['critic'])})
    with pytest.raises(NonFiniteError, match='Refusing to checkpoint step 1'):
      ckpt.save(bad)
    assert ckpt.all_steps() == [0]
    restored = toy.flat_state(ckpt.restore(_perturbed_template(trainer)))
  for k in good:
    np.testing.assert_array_equal(restored[k], good[k], err_msg=k)


def test_sigterm_saves_and_exits_cleanly(tmp_path, trainer):
  marker, ckpt_dir = tmp_path / 'started', tmp_path / 'ckpt'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.Popen([sys.executable, str(SCRIPT), '--out', str(tmp_path / 'o.npz'),
                           '--steps', '1000000', '--ckpt', str(ckpt_dir), '--marker', str(marker)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.1)
    assert marker.exists(), proc.communicate(timeout=10)[0][-3000:]
    os.kill(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
  template = _init(trainer)
  with Checkpointer(ckpt_dir / 'fsdp1', teacher_identity='toy') as ckpt:
    steps = ckpt.all_steps()
    assert len(steps) == 1 and 3 <= steps[0] < 1000000
    assert int(ckpt.restore(template).step) == steps[0]


def _report(error):
  """Hands `error` to sys.unraisablehook, as Python does for an exception it cannot raise."""
  sys.unraisablehook(type('U', (), {'exc_value': error})())


def test_leftover_reports_of_a_failed_restore_are_dropped_and_others_kept(monkeypatch):
  """After a restore found a step unreadable, the errors of orbax's abandoned reads (naming the
  step, or 'Event loop is closed' when its loop shuts down at exit) are not printed; other
  reports still are."""
  import logging
  from onestep_jax.train import checkpoint
  printed = []
  monkeypatch.setattr(sys, 'unraisablehook', printed.append)
  monkeypatch.setattr(checkpoint, '_SILENCED', set())
  _report(RuntimeError('Event loop is closed'))
  assert len(printed) == 1  # no restore failed yet: nothing is dropped
  checkpoint._silence_reports_about('/run/checkpoints/20/')
  _report(RuntimeError('Event loop is closed'))
  _report(ValueError('OUT_OF_RANGE reading /run/checkpoints/20/state/x'))
  _report(ValueError('an unrelated error'))
  assert [str(u.exc_value) for u in printed[1:]] == ['an unrelated error']
  log = lambda error: logging.LogRecord('asyncio', logging.ERROR, '', 0, 'Task exception was '  # noqa: E731
                                        'never retrieved', None, (type(error), error, None))
  assert not checkpoint._asyncio_filter(log(RuntimeError('Event loop is closed')))
  assert checkpoint._asyncio_filter(log(ValueError('an unrelated error')))


def test_reports_during_a_failing_read_are_dropped_and_a_good_read_silences_nothing(monkeypatch,
                                                                                   tmp_path):
  """A sibling read of a damaged step can be collected, and reported, while orbax's frames unwind,
  before the error reaches the restore's handler (CI, 5 December 2026): such a report is dropped;
  once a read of a step succeeds, reports naming that step print again."""
  from onestep_jax.train import checkpoint
  printed = []
  monkeypatch.setattr(sys, 'unraisablehook', printed.append)
  monkeypatch.setattr(checkpoint, '_SILENCED', set())
  ckpt = Checkpointer(tmp_path)
  step_dir = lambda step: os.path.join(ckpt.directory, str(step), '')  # noqa: E731
  with pytest.raises(checkpoint.UnreadableCheckpointError, match='damaged'):
    with ckpt._reading(20):
      _report(ValueError(f'OUT_OF_RANGE reading {step_dir(20)}state/x'))  # before the handler
      raise OSError('damaged')
  assert printed == []
  with ckpt._reading(10):
    _report(ValueError(f'reading {step_dir(10)}state/x'))  # during a good read
  with ckpt._reading(30):
    pass
  _report(ValueError(f'reading {step_dir(30)}state/x'))
  _report(ValueError(f'reading {step_dir(20)}state/y'))  # the damaged step stays silenced
  assert [str(u.exc_value) for u in printed] == [f'reading {step_dir(30)}state/x']
  ckpt.close()


SHARDED_CHECK = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from onestep_jax.train.state import shards_all_finite
assert jax.device_count() == 8
mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'fsdp'))
put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
x = np.arange(64.0, dtype=np.float32).reshape(8, 8)
bad = x.copy()
bad[7, 7] = np.inf  # in the last device's shard only
good = {'sharded': put(x, P('data', 'fsdp')), 'replicated': put(x, P()),
        'half': put(x, P(None, 'fsdp')).astype(jnp.bfloat16), 'count': jnp.arange(3)}
print(shards_all_finite(good), shards_all_finite({**good, 'bad': put(bad, P('data', 'fsdp'))}),
      shards_all_finite({'bad': put(bad, P(None, 'fsdp'))}),
      shards_all_finite({'bad': put(bad, P()).astype(jnp.bfloat16)}))
"""


def test_finiteness_check_reads_every_shard_of_sharded_and_replicated_state():
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  out = subprocess.run([sys.executable, '-c', SHARDED_CHECK], env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ['True', 'False', 'False', 'False']


SHARDED_TEMPLATE = """
import sys, jax, numpy as np
from onestep_jax.train.checkpoint import Checkpointer
from onestep_jax.train.mesh import make_mesh
from train_helpers import toy
assert jax.device_count() == 8
trainer = toy.make_trainer(mesh=make_mesh(fsdp=2), fsdp_min_size=16)
fresh = lambda: trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(0))
template = trainer.state_template(lambda key: toy.init_params(), jax.random.PRNGKey(0),
                                  key=jax.random.PRNGKey(0))
straight = fresh()
pairs = list(zip(jax.tree.leaves(template), jax.tree.leaves(straight)))
assert all(t.sharding == x.sharding and t.shape == x.shape for t, x in pairs)
assert any(not x.sharding.is_fully_replicated for _, x in pairs)  # fsdp shards some leaves
for t, x in zip(jax.tree.leaves(template.frozen), jax.tree.leaves(straight.frozen)):
  np.testing.assert_array_equal(np.asarray(t), np.asarray(x))
full = toy.flat_state(trainer.train(straight, get_batch=toy.get_batch, num_steps=4,
                                    progress=False))
with Checkpointer(sys.argv[1], teacher_identity='toy') as ckpt:
  trainer.train(fresh(), get_batch=toy.get_batch, num_steps=2, checkpointer=ckpt, progress=False)
with Checkpointer(sys.argv[1], teacher_identity='toy') as ckpt:
  resumed = toy.flat_state(trainer.train(ckpt.restore(template), get_batch=toy.get_batch,
                                         num_steps=4, progress=False))
for k in full:
  np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)
print('resumed exactly')
"""


def test_a_sharded_state_template_matches_init_state_and_resumes_exactly(tmp_path):
  """8 fake devices, fsdp=2: the template's shardings are init_state's, and a run restored into
  it goes on as the uninterrupted one, bit for bit."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'PYTHONPATH': os.pathsep.join([str(pathlib.Path(__file__).parent),
                                        os.environ.get('PYTHONPATH', '')])}
  out = subprocess.run([sys.executable, '-c', SHARDED_TEMPLATE, str(tmp_path / 'ckpt')],
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split()[-2:] == ['resumed', 'exactly']
