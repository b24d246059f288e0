"""The scripts' tcmalloc restart (onestep_jax/experiment/allocator.py)."""
import os
import subprocess
import sys

import pytest

from onestep_jax.experiment import allocator

LIB = 'libtcmalloc_minimal.so.4'
NEEDS_TCMALLOC = pytest.mark.skipif(
    not sys.platform.startswith('linux') or allocator.find_tcmalloc() is None,
    reason='needs tcmalloc (apt-get install libtcmalloc-minimal4) on Linux')


def test_preloads_tcmalloc_on_linux_and_raises_the_report_threshold():
  env = allocator.preload_environment({'PATH': '/bin'}, LIB, platform='linux')
  assert env == {'PATH': '/bin', 'LD_PRELOAD': LIB,
                 allocator.REPORT_THRESHOLD: str(1 << 40)}
  for choice in ('tcmalloc', ''):  # set but empty counts as unset
    env = allocator.preload_environment({allocator.SWITCH: choice}, LIB, 'linux')
    assert env['LD_PRELOAD'] == LIB
  own = {allocator.REPORT_THRESHOLD: '123'}
  assert allocator.preload_environment(own, LIB, 'linux')[allocator.REPORT_THRESHOLD] == '123'


@pytest.mark.parametrize('environ, library, platform', [
    ({allocator.SWITCH: 'system'}, LIB, 'linux'),  # asked for the C library's malloc
    ({'LD_PRELOAD': 'libjemalloc.so.2'}, LIB, 'linux'),  # the user's own preload
    ({}, None, 'linux'),  # tcmalloc not installed
    ({}, LIB, 'darwin'),
])
def test_keeps_the_process_as_it_is(environ, library, platform):
  assert allocator.preload_environment(environ, library, platform) is None


@pytest.mark.parametrize('environ, library, platform', [
    ({}, LIB, 'linux'),  # installed: the script restarts under it
    ({allocator.SWITCH: 'system'}, None, 'linux'),  # the C library's malloc asked for
    ({'LD_PRELOAD': 'libjemalloc.so.2'}, None, 'linux'),  # the user's own preload
    ({}, None, 'darwin'),
])
def test_no_note_unless_tcmalloc_is_wanted_and_missing(environ, library, platform):
  assert allocator.missing_tcmalloc_note(environ, library, platform) is None


def test_a_script_says_once_that_tcmalloc_is_missing_and_goes_on(monkeypatch, capsys):
  monkeypatch.setattr(allocator, 'find_tcmalloc', lambda: None)
  monkeypatch.setattr(allocator.os, 'execve', lambda *a: pytest.fail('restarted'))
  for name in ('LD_PRELOAD', allocator.SWITCH):
    monkeypatch.delenv(name, raising=False)
  allocator.reexec_with_tcmalloc()
  err = capsys.readouterr().err
  assert err.count('\n') == 1
  assert 'tcmalloc is not installed' in err and 'apt-get install libtcmalloc-minimal4' in err
  assert allocator.SWITCH in err
  monkeypatch.setenv(allocator.SWITCH, 'system')
  allocator.reexec_with_tcmalloc()
  assert capsys.readouterr().err == ''


def test_bad_switch_is_an_error():
  with pytest.raises(ValueError, match='ONESTEP_JAX_MALLOC'):
    allocator.preload_environment({allocator.SWITCH: 'jemalloc'}, LIB, 'linux')


SCRIPT = """
import sys
from onestep_jax.experiment.allocator import allocator_in_use, reexec_with_tcmalloc
print('started', flush=True)
reexec_with_tcmalloc()
print(allocator_in_use(), sys.argv[1:], sys.flags.dont_write_bytecode)
if allocator_in_use() == 'tcmalloc':
  from onestep_jax.experiment.allocator import tcmalloc_property
  print(tcmalloc_property('tcmalloc.max_total_thread_cache_bytes'))
"""


def run_script(tmp_path, **env):
  script = tmp_path / 'script.py'
  script.write_text(SCRIPT)
  environ = {k: v for k, v in os.environ.items()
             if k not in ('LD_PRELOAD', allocator.SWITCH) and not k.startswith('TCMALLOC_')}
  out = subprocess.run([sys.executable, '-B', str(script), '--a=1', 'b'], capture_output=True,
                       text=True, env={**environ, **env}, check=True)
  return out.stdout.splitlines()


@NEEDS_TCMALLOC
def test_script_restarts_once_with_tcmalloc_and_its_arguments(tmp_path):
  # 'started' twice: the restart reruns the script from the top, with the interpreter's flags
  # (-B) and the arguments; the second run finds LD_PRELOAD set and goes on.
  assert run_script(tmp_path)[:3] == ['started', 'started', "tcmalloc ['--a=1', 'b'] 1"]
  assert run_script(tmp_path, ONESTEP_JAX_MALLOC='system') == [
      'started', "system ['--a=1', 'b'] 1"]
  # The user's own tcmalloc settings reach it (README: a smaller cap on its thread caches).
  cap = 'TCMALLOC_MAX_TOTAL_THREAD_CACHE_BYTES'
  assert run_script(tmp_path, **{cap: str(4 << 20)})[-1] == str(4 << 20)


def run_under_tcmalloc(script, text: str, *args: str) -> str:
  """The standard output of Python source `text`, written to `script` and run under tcmalloc."""
  script.write_text(text)
  environ = {k: v for k, v in os.environ.items() if k != allocator.SWITCH}
  return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                        check=True, env={**environ, 'LD_PRELOAD': allocator.find_tcmalloc()}).stdout


RELEASE_SCRIPT = """
import ctypes
from onestep_jax.experiment.allocator import allocator_in_use, release_freed_memory

def rss_mb():
  with open('/proc/self/status') as f:
    return next(int(l.split()[1]) // 1024 for l in f if l.startswith('VmRSS'))

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 256 << 20
before = rss_mb()
block = libc.malloc(size)
ctypes.memset(block, 1, size)  # resident
libc.free(ctypes.c_void_p(block))
freed = rss_mb()
release_freed_memory()
print(allocator_in_use(), before, freed, rss_mb())
"""


@NEEDS_TCMALLOC
def test_release_hands_tcmallocs_freed_pages_back(tmp_path):
  # tcmalloc keeps a freed 256 MB block resident; malloc_trim alone would not release it.
  out = run_under_tcmalloc(tmp_path / 'release.py', RELEASE_SCRIPT)
  name, before, freed, released = (int(v) if v.isdigit() else v for v in out.split())
  assert name == 'tcmalloc'
  if freed - before < 200:
    pytest.skip(f'this tcmalloc returned the freed block by itself: {out}')
  assert released - before < 50, out


def test_main_script_refuses_a_bad_switch_without_a_traceback():
  main = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'main.py')
  out = subprocess.run([sys.executable, main, '--config=configs/teacher_toy2d.py',
                        '--workdir=unused'], capture_output=True, text=True,
                       env={**os.environ, allocator.SWITCH: 'fast'})
  assert out.returncode == 1
  assert out.stderr.strip() == ("error: ONESTEP_JAX_MALLOC='fast': use 'tcmalloc' (the default "
                                "when it is installed) or 'system'")


TEMPORARIES_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np, optax
from onestep_jax.experiment.allocator import allocated_bytes, tcmalloc_property
from onestep_jax.train import spec
from onestep_jax.train.mesh import global_batch
from onestep_jax.train.trainer import Trainer

def resident_heap_mb():
  return (tcmalloc_property('generic.heap_size')
          - tcmalloc_property('tcmalloc.pageheap_unmapped_bytes')) / 2**20

def phase(name, n):  # an n x n activation kept for the backward pass: XLA temporaries of ~4 n^2 B
  def loss_fn(params, batch, key):
    column = jnp.arange(n, dtype=jnp.float32)[:, None] / n
    h = jnp.tanh((column * (params[name][:1] + batch['x'][0, 0])) @ jnp.ones((1, n)))
    return jnp.mean(jnp.sin(h) * h), {}
  return spec.Phase(name, loss_fn, updates=(name,))

groups = [spec.Group(g, trainable=True, optimizer=optax.sgd(0.1)) for g in 'ab']
trainer = Trainer(groups=groups, phases=[phase('a', 3600), phase('b', 4000)],
                  stages=[spec.Stage([('a', 1), ('b', 1)])], batch_size=4,
                  one_set_of_temporaries=sys.argv[1] == 'true')
state = trainer.init_state({'a': jnp.ones(4), 'b': jnp.ones(4)}, key=jax.random.PRNGKey(0))
batch = global_batch({'x': np.zeros((4, 1), np.float32)}, trainer.mesh)
before, peak = resident_heap_mb(), 0.0
for step in range(8):
  state, _ = trainer.train_step(state, batch, step=step)
  jax.block_until_ready(state)
  peak = max(peak, resident_heap_mb())
temps = [trainer._executables[p].memory_analysis().temp_size_in_bytes / 2**20 for p in 'ab']
print(allocated_bytes() > 0, *temps, peak - before, *np.asarray(state.params['a']))
"""


@NEEDS_TCMALLOC
def test_trainer_keeps_one_set_of_its_phases_temporaries_resident(tmp_path):
  # Two phases with XLA temporaries of about 50 and 61 MB, alternating: the trainer reserves one
  # span of the larger and waits for each phase's temporaries to be freed, so tcmalloc's resident
  # heap grows by one set and what the first step compiles (78-80 MB on a 2-core AMD EPYC).
  # Without it the next phase allocates its own set beside the previous one's (127 MB there).
  script = tmp_path / 'temporaries.py'
  one, both = (run_under_tcmalloc(script, TEMPORARIES_SCRIPT, setting).split()
               for setting in ('true', 'false'))
  assert one[0] == 'True'
  small, large, growth = map(float, one[1:4])
  assert small > 40 and large > small + 8, one
  assert growth < large + 0.6 * small, one
  assert one[4:] == both[4:]  # the same training


def test_allocated_bytes_is_tcmallocs_count_or_none():
  count = allocator.allocated_bytes()
  assert (count is None) == (allocator.allocator_in_use() != 'tcmalloc')
