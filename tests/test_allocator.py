"""The scripts' tcmalloc restart (onestep_jax/experiment/allocator.py)."""
import os
import subprocess
import sys

import pytest

from onestep_jax.experiment import allocator

LIB = 'libtcmalloc_minimal.so.4'


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


def test_bad_switch_is_an_error():
  with pytest.raises(ValueError, match='ONESTEP_JAX_MALLOC'):
    allocator.preload_environment({allocator.SWITCH: 'jemalloc'}, LIB, 'linux')


SCRIPT = """
import sys
from onestep_jax.experiment.allocator import allocator_in_use, reexec_with_tcmalloc
print('started', flush=True)
reexec_with_tcmalloc()
print(allocator_in_use(), sys.argv[1:], sys.flags.dont_write_bytecode)
"""


def run_script(tmp_path, **env):
  script = tmp_path / 'script.py'
  script.write_text(SCRIPT)
  environ = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', allocator.SWITCH)}
  out = subprocess.run([sys.executable, '-B', str(script), '--a=1', 'b'], capture_output=True,
                       text=True, env={**environ, **env}, check=True)
  return out.stdout.splitlines()


@pytest.mark.skipif(not sys.platform.startswith('linux') or allocator.find_tcmalloc() is None,
                    reason='needs tcmalloc (apt-get install libtcmalloc-minimal4) on Linux')
def test_script_restarts_once_with_tcmalloc_and_its_arguments(tmp_path):
  # 'started' twice: the restart reruns the script from the top, with the interpreter's flags
  # (-B) and the arguments; the second run finds LD_PRELOAD set and goes on.
  assert run_script(tmp_path) == ['started', 'started', "tcmalloc ['--a=1', 'b'] 1"]
  assert run_script(tmp_path, ONESTEP_JAX_MALLOC='system') == [
      'started', "system ['--a=1', 'b'] 1"]


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


@pytest.mark.skipif(not sys.platform.startswith('linux') or allocator.find_tcmalloc() is None,
                    reason='needs tcmalloc (apt-get install libtcmalloc-minimal4) on Linux')
def test_release_hands_tcmallocs_freed_pages_back(tmp_path):
  # tcmalloc keeps a freed 256 MB block resident; malloc_trim alone would not release it.
  script = tmp_path / 'release.py'
  script.write_text(RELEASE_SCRIPT)
  environ = {k: v for k, v in os.environ.items() if k != allocator.SWITCH}
  out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                       env={**environ, 'LD_PRELOAD': allocator.find_tcmalloc()})
  name, before, freed, released = (int(v) if v.isdigit() else v for v in out.stdout.split())
  assert name == 'tcmalloc'
  if freed - before < 200:
    pytest.skip(f'this tcmalloc returned the freed block by itself: {out.stdout}')
  assert released - before < 50, out.stdout


def test_main_script_refuses_a_bad_switch_without_a_traceback():
  main = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'main.py')
  out = subprocess.run([sys.executable, main, '--config=configs/teacher_toy2d.py',
                        '--workdir=unused'], capture_output=True, text=True,
                       env={**os.environ, allocator.SWITCH: 'fast'})
  assert out.returncode == 1
  assert out.stderr.strip() == ("error: ONESTEP_JAX_MALLOC='fast': use 'tcmalloc' (the default "
                                "when it is installed) or 'system'")
