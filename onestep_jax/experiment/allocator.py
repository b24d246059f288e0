"""tcmalloc for the command-line scripts: a faster malloc for XLA:CPU's per-call buffers (issue 6).

glibc's malloc hands the large temporary buffers of a jitted call back to the system when the call
ends, and the next call faults them in again (benchmarks/call_overhead.py counts the faults);
tcmalloc keeps them. The scripts in experiments/ and the timing benchmarks call
`reexec_with_tcmalloc()` first thing, which restarts the process once with tcmalloc in
LD_PRELOAD when it is installed (Debian/Ubuntu: `apt-get install libtcmalloc-minimal4`).
When it is not installed they say so on stderr once: glibc's malloc made the EDM reference step
16-45% slower on the machines measured (docs/RESULTS.md, "The allocator" and "The allocator
decides the faster machine's side by side").
Importing onestep_jax never does this. ONESTEP_JAX_MALLOC=system keeps the C library's malloc
(and the note), and a user's own LD_PRELOAD is left alone.
"""
from __future__ import annotations

import ctypes.util
import functools
import os
import sys
from typing import Callable, Mapping, Optional

SWITCH = 'ONESTEP_JAX_MALLOC'  # 'system': do not preload tcmalloc
# tcmalloc prints a line for every allocation above this many bytes (its default is 1 GiB, which
# large evaluation batches reach); the scripts report memory themselves.
REPORT_THRESHOLD = 'TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD'


def find_tcmalloc() -> Optional[str]:
  """The installed tcmalloc library's name (searched like any shared library), or None."""
  return ctypes.util.find_library('tcmalloc_minimal') or ctypes.util.find_library('tcmalloc')


def preload_environment(environ: Mapping[str, str], library: Optional[str],
                        platform: str = sys.platform) -> Optional[dict]:
  """The environment to restart with, tcmalloc `library` preloaded; None to keep the process as
  it is: not Linux, no library, ONESTEP_JAX_MALLOC=system, or an LD_PRELOAD already set (the
  user's own, or this function's after the restart).

  Raises:
    ValueError: ONESTEP_JAX_MALLOC is neither 'system' nor 'tcmalloc'.
  """
  choice = environ.get(SWITCH) or 'tcmalloc'  # set but empty: the default
  if choice not in ('system', 'tcmalloc'):
    raise ValueError(f"{SWITCH}={choice!r}: use 'tcmalloc' (the default when it is installed) "
                     "or 'system'")
  if (choice == 'system' or not platform.startswith('linux') or library is None
      or environ.get('LD_PRELOAD')):
    return None
  return {**environ, 'LD_PRELOAD': library, REPORT_THRESHOLD: environ.get(REPORT_THRESHOLD,
                                                                            str(1 << 40))}


def missing_tcmalloc_note(environ: Mapping[str, str], library: Optional[str],
                          platform: str = sys.platform) -> Optional[str]:
  """The line to print when a script would restart under tcmalloc (preload_environment's
  conditions) but it is not installed; None otherwise."""
  if library is not None or preload_environment(environ, 'tcmalloc', platform) is None:
    return None
  return ('onestep_jax: tcmalloc is not installed, so this runs on the C library\'s malloc, '
          'which made XLA:CPU training steps 16-45% slower where measured; install it with '
          f'`apt-get install libtcmalloc-minimal4` (Debian/Ubuntu), or set {SWITCH}=system to '
          'keep the C library\'s malloc without this note.')


def reexec_with_tcmalloc() -> None:
  """Restarts this script with tcmalloc preloaded (same interpreter, flags and arguments), if
  preload_environment says so; otherwise returns. Call it before importing JAX.

  Raises:
    SystemExit: with the message of a bad ONESTEP_JAX_MALLOC.
  """
  library = find_tcmalloc()
  try:
    env = preload_environment(os.environ, library)
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  if env is None:
    note = missing_tcmalloc_note(os.environ, library)
    if note:
      print(note, file=sys.stderr, flush=True)
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def allocator_in_use() -> str:
  """'tcmalloc', 'jemalloc' or 'system': which malloc this process has loaded (read from
  /proc/self/maps; 'system' where that file does not exist)."""
  try:
    with open('/proc/self/maps') as f:
      maps = f.read()
  except OSError:
    return 'system'
  return next((name for name in ('tcmalloc', 'jemalloc') if f'lib{name}' in maps), 'system')


def release_freed_memory() -> None:
  """Hands the memory malloc holds but no longer uses back to the OS: tcmalloc's
  MallocExtension_ReleaseFreeMemory, or glibc's malloc_trim(0); a no-op for other allocators.

  tcmalloc keeps freed pages resident (that is why it is fast for XLA's per-call buffers), so the
  memory freed after compiling a U-Net phase stayed in RSS under it; glibc's malloc_trim does
  nothing for tcmalloc's heap.
  """
  try:
    library = ctypes.CDLL(None)
  except (OSError, TypeError):  # no handle on the process's own symbols (Windows)
    return
  tcmalloc_release = getattr(library, 'MallocExtension_ReleaseFreeMemory', None)
  if tcmalloc_release is not None:
    tcmalloc_release()
  elif hasattr(library, 'malloc_trim'):
    library.malloc_trim(0)


@functools.lru_cache(maxsize=None)
def _tcmalloc_property_reader() -> Optional[Callable]:
  """tcmalloc's MallocExtension_GetNumericProperty, or None when tcmalloc is not loaded."""
  try:
    return ctypes.CDLL(None).MallocExtension_GetNumericProperty
  except (AttributeError, OSError, TypeError):  # no tcmalloc; no handle on own symbols (Windows)
    return None


def tcmalloc_property(name: str) -> Optional[int]:
  """tcmalloc's numeric property `name` (e.g. 'generic.heap_size'); None when tcmalloc is not
  the process's malloc or does not know `name`."""
  get = _tcmalloc_property_reader()
  value = ctypes.c_size_t()
  if get is None or not get(name.encode(), ctypes.byref(value)):
    return None
  return value.value


def allocated_bytes() -> Optional[int]:
  """Bytes malloc has handed out and not had back (tcmalloc's generic.current_allocated_bytes);
  None when tcmalloc is not the process's malloc."""
  return tcmalloc_property('generic.current_allocated_bytes')


def malloc_and_free(nbytes: int) -> None:
  """One malloc of `nbytes` and its free, which leaves a free span of that size in tcmalloc's
  heap (see Trainer._one_set_of_temporaries)."""
  libc = ctypes.CDLL(None)
  libc.malloc.restype = ctypes.c_void_p
  libc.free.argtypes = [ctypes.c_void_p]
  libc.free(libc.malloc(ctypes.c_size_t(nbytes)))
