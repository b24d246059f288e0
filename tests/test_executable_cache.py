"""Compiled phases kept on disk (onestep_jax.train.executable_cache): a trainer given the cache
loads its phases without tracing them and trains bit for bit as one that compiled them; the key
moves with the arguments, the run's key, the library's compiler options and JAX's configuration;
unreadable files are deleted and recompiled; the runner keeps one per workdir and its reruns
load it."""
import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import serialize_executable
from jax.experimental.compilation_cache import compilation_cache

from onestep_jax.experiment.runner import run
from onestep_jax.train import executable_cache
from onestep_jax.train.executable_cache import ExecutableCache
from onestep_jax.train.export import load_exported
from test_experiment import _config
from train_helpers import toy


@contextlib.contextmanager
def _persistent_cache(on: bool):
  """JAX's persistent cache on or off inside. JAX decides once per process whether to use it,
  at the first compile, so that decision is reset on entry and exit."""
  enabled, directory = jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir
  jax.config.update('jax_enable_compilation_cache', on)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    jax.config.update('jax_enable_compilation_cache', enabled)
    jax.config.update('jax_compilation_cache_dir', directory)
    compilation_cache.reset_cache()


@pytest.fixture
def no_persistent_cache(monkeypatch):
  """JAX's persistent cache off, so that every compile in the test is XLA's (a program that
  cache supplies is not kept: the last test); another test in this process may have turned it
  on and filled it with the same programs."""
  monkeypatch.setattr('onestep_jax.experiment.runner.enable_compilation_cache', lambda: None)
  with _persistent_cache(False):
    yield


def _train(trainer, state, num_steps):
  return trainer.train(state, get_batch=toy.get_batch, num_steps=num_steps, progress=False)


def _no_tracing(trainer):
  def refuse(phase, args):
    raise AssertionError(f'traced {phase!r}: it should have been loaded')
  trainer._lowered = refuse  # pylint: disable=protected-access


@contextlib.contextmanager
def _events(event: str, *, durations: bool = False):
  """Yields a list that collects JAX's monitoring events named `event` while inside (with
  `durations=True`, the durations of the duration events so named)."""
  from jax._src import monitoring  # no public unregister
  seen = []
  def listener(name, *duration, **_):
    if name == event:
      seen.append(duration[0] if durations else name)
  if durations:
    register, unregister = (jax.monitoring.register_event_duration_secs_listener,
                            monitoring.unregister_event_duration_listener)
  else:
    register, unregister = (jax.monitoring.register_event_listener,
                            monitoring.unregister_event_listener)
  register(listener)
  try:
    yield seen
  finally:
    unregister(listener)


def _loads(event=executable_cache.LOAD_EVENT):
  """The executable cache's load (or preload) durations while inside: see `_events`."""
  return _events(event, durations=True)


def test_loaded_phases_train_as_compiled_ones(tmp_path, no_persistent_cache):
  plain = toy.make_trainer()
  straight = toy.flat_state(_train(plain, plain.init_state(toy.init_params(),
                                                           key=jax.random.PRNGKey(0)), 6))
  first = toy.make_trainer(executable_cache=ExecutableCache(tmp_path, key='toy'))
  state = _train(first, first.init_state(toy.init_params(), key=jax.random.PRNGKey(0)), 3)
  # Both stages ran: the critic, generator and critic-on-samples phases and the end of step.
  assert len(os.listdir(tmp_path)) == 4
  second = toy.make_trainer(executable_cache=ExecutableCache(tmp_path, key='toy'))
  _no_tracing(second)
  with _loads() as loads:
    resumed = toy.flat_state(_train(second, state, 6))
  assert len(loads) == 4
  assert resumed.keys() == straight.keys()
  for k in straight:
    np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)


def test_preload_reads_the_stages_programs_in_the_background(tmp_path, no_persistent_cache):
  """`Trainer.preload(step)` reads the programs of the stage at `step` and the end of step, and
  only those; the steps take them without reading or tracing and train as compiled ones."""
  def fresh():
    trainer = toy.make_trainer(executable_cache=ExecutableCache(tmp_path, key='toy'))
    return trainer, trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(0))
  trainer, state = fresh()
  straight = toy.flat_state(_train(trainer, state, 3))  # both stages: 4 programs stored
  trainer, state = fresh()
  _no_tracing(trainer)
  with _loads(executable_cache.PRELOAD_EVENT) as preloads, _loads() as loads:
    trainer.preload(0)  # the first stage: the critic-only phase and the end of step
    state = _train(trainer, state, 1)
    assert (len(preloads), len(loads)) == (2, 2)
    trainer.preload(0)  # taken already: nothing to read again
    state = _train(trainer, state, 3)  # the generator's phases, read when first needed
    assert (len(preloads), len(loads)) == (2, 4)
  resumed = toy.flat_state(state)
  for k in straight:
    np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)


def test_an_unreadable_preloaded_program_is_deleted_and_recompiled(tmp_path, no_persistent_cache):
  f = jax.jit(lambda x: x - 1)
  x = jnp.arange(3.0)
  ExecutableCache(tmp_path, key='k').store('p', (x,), f.lower(x).compile())
  cache = ExecutableCache(tmp_path, key='k')
  with open(cache.path('p', (x,)), 'wb') as file:
    file.write(b'not an executable')
  cache.preload(['p', 'q'])
  with pytest.warns(UserWarning, match='compiling .p. again'):
    assert cache.load('p', (x,)) is None
  assert os.listdir(tmp_path) == []


def test_parallel_compile_stores_and_loads(tmp_path, no_persistent_cache):
  trainer = toy.make_trainer(executable_cache=ExecutableCache(tmp_path, key='toy'))
  trainer.parallel_compile = True
  state = _train(trainer, trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(0)), 3)
  again = toy.make_trainer(executable_cache=ExecutableCache(tmp_path, key='toy'))
  again.parallel_compile = True
  _no_tracing(again)
  _train(again, state, 4)


def test_a_directory_instead_of_a_cache_is_refused(tmp_path):
  with pytest.raises(TypeError, match='executable_cache must be an .*ExecutableCache or None'):
    toy.make_trainer(executable_cache=str(tmp_path))


def test_key_follows_arguments_run_key_and_compiler_options(tmp_path, monkeypatch):
  cache = ExecutableCache(tmp_path, key='a')
  x = jnp.zeros((4, 3))
  path = cache.path('phase:p', (x,))
  assert cache.path('phase:p', (jnp.zeros((4, 3)),)) == path
  for other in [(jnp.zeros((4, 2)),), (jnp.zeros((4, 3), jnp.bfloat16),), ({'x': x},),
                (jnp.zeros((4, 3)), np.int32(0))]:
    assert cache.path('phase:p', other) != path, other
  assert cache.path('phase:q', (x,)) != path
  assert ExecutableCache(tmp_path, key='b').path('phase:p', (x,)) != path
  monkeypatch.setenv('ONESTEP_JAX_YNN_FUSION', 'reduce')
  assert ExecutableCache(tmp_path, key='a').path('phase:p', (x,)) != path
  monkeypatch.delenv('ONESTEP_JAX_YNN_FUSION')
  monkeypatch.setenv('ONESTEP_JAX_MALLOC', 'system')  # the process's malloc: no program changes
  assert ExecutableCache(tmp_path, key='a').path('phase:p', (x,)) == path
  with jax.default_matmul_precision('highest'):
    assert ExecutableCache(tmp_path, key='a').path('phase:p', (x,)) != path
  assert ExecutableCache(tmp_path, key='a').path('phase:p', (x,)) == path


def test_sharding_is_in_the_key(tmp_path):
  from jax.sharding import NamedSharding, PartitionSpec as P
  cache = ExecutableCache(tmp_path, key='a')
  mesh = jax.make_mesh((1,), ('data',))
  x = jnp.zeros((4, 3))
  paths = {cache.path('p', (jax.device_put(x, NamedSharding(mesh, spec)),))
           for spec in (P(), P('data'), P(None, 'data'))}
  assert len(paths) == 3


def test_other_keys_files_are_deleted_and_unreadable_ones_recompiled(tmp_path, no_persistent_cache):
  f = jax.jit(lambda x: x * 2)
  x = jnp.arange(3.0)
  old = ExecutableCache(tmp_path, key='old')
  old.store('p', (x,), f.lower(x).compile())
  assert len(os.listdir(tmp_path)) == 1
  cache = ExecutableCache(tmp_path, key='new')
  assert os.listdir(tmp_path) == []
  cache.store('p', (x,), f.lower(x).compile())
  np.testing.assert_array_equal(cache.load('p', (x,))(x), [0.0, 2.0, 4.0])
  with open(cache.path('p', (x,)), 'wb') as file:
    file.write(b'not an executable')
  with pytest.warns(UserWarning, match='compiling .p. again'):
    assert cache.load('p', (x,)) is None
  assert os.listdir(tmp_path) == []  # deleted, so the warning is not repeated on every rerun


def test_runner_rerun_loads_the_workdirs_phases(tmp_path, no_persistent_cache):
  def config(num_steps):
    c = _config('teacher_toy2d', 'ring8', num_steps=num_steps, save_every=10)
    c.train.compilation_cache = True
    c.method.sample_steps = 4
    return c
  straight = run(config(20), str(tmp_path / 'a'), progress=False)
  run(config(10), str(tmp_path / 'b'), progress=False)
  kept = tmp_path / 'b' / 'executables'
  assert len([f for f in os.listdir(kept) if f.endswith('.bin')]) == 2  # phase, end of step
  samplers = sorted(os.listdir(kept / 'samplers'))
  assert len(samplers) == 1 and '-sample-teacher_nfe7-' in samplers[0], samplers
  with _loads(executable_cache.PRELOAD_EVENT) as preloads, _loads() as loads:
    resumed = run(config(20), str(tmp_path / 'b'), progress=False)  # extended: same keys
  assert len(preloads) == 2  # the phases, read while the networks initialised
  assert len(loads) == 3  # and the evaluation's sampler
  for k in straight:
    if 'time' not in k and 'per_s' not in k:
      assert resumed[k] == straight[k], k
  a, b = (load_exported(tmp_path / d / 'export').params for d in 'ab')
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # method.sample_steps and eval.* reach the sampler: a rerun that changes one compiles it again
  other = config(20)  # trained already: this run only evaluates
  other.eval.batch_size = 512
  with _loads() as loads:
    run(other, str(tmp_path / 'b'), progress=False)
  assert not loads  # its sampler compiled, not loaded
  assert sorted(os.listdir(kept / 'samplers')) != samplers


def test_programs_from_the_persistent_cache_are_kept_with_their_kernels(tmp_path, monkeypatch):
  """A program that JAX's persistent cache supplies is kept as that cache holds it: jaxlib
  serialises such an executable again without its kernels, which fails to run ('Function ...
  not found'), so that a workdir whose first run found its programs in that cache would
  otherwise trace and lower them at every resume."""
  from onestep_jax.train.compilation_cache import enable_compilation_cache
  with _persistent_cache(True):
    enable_compilation_cache(tmp_path / 'xla')
    f = jax.jit(lambda x: jnp.sin(x) @ x.T + 1)
    x = jnp.arange(12.0).reshape(3, 4)
    first = ExecutableCache(tmp_path / 'a', key='k')
    first.compile('p', (x,), f.lower(x))
    jax.clear_caches()  # the next compile reads the persistent cache
    second = ExecutableCache(tmp_path / 'b', key='k')
    with _events('/jax/compilation_cache/cache_hits') as hits:
      expected = np.asarray(second.compile('p', (x,), f.lower(x))(x))
    assert hits, 'the persistent cache did not supply the program'
    with pytest.raises(Exception, match='not found'):  # what jaxlib alone would have kept
      serialize_executable.deserialize_and_load(
          *serialize_executable.serialize(f.lower(x).compile()))(x)
    loaded = ExecutableCache(tmp_path / 'b', key='k').load('p', (x,))
    np.testing.assert_array_equal(np.asarray(loaded(x)), expected)
    # where the bytes the persistent cache read are not seen (another JAX), nothing is kept
    from jax._src import compilation_cache as jax_compilation_cache
    monkeypatch.setattr(jax_compilation_cache, 'extract_executable_and_time',
                        jax_compilation_cache.extract_executable_and_time.__wrapped__)
    jax.clear_caches()
    third = ExecutableCache(tmp_path / 'c', key='k')
    np.testing.assert_array_equal(np.asarray(third.compile('p', (x,), f.lower(x))(x)), expected)
    assert not os.path.exists(third.path('p', (x,)))

