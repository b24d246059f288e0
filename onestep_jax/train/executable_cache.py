"""Compiled training phases kept on disk under a key of what made them, so that a rerun loads
them without tracing, lowering or compiling (issue 6, warm start).

JAX's persistent cache (`compilation_cache.py`) is keyed on the lowered program, so a warm
process still traces and lowers every phase before it finds the compiled one: the EDM reference
step's warm compile was 1.23-1.31 s that way, half of it tracing and lowering, and 0.60-0.62 s
loaded from here (`benchmarks/train_step.py --warm_start`; docs/RESULTS.md, "Compiled phases kept
with the run"). This cache is keyed before tracing, so its key must hold everything the programs
depend on:

- `code_digest()`: the library's files, the versions of Python, jax, jaxlib, flax, optax and
  numpy, the host CPU's instruction-set flags, JAX's configuration, `XLA_FLAGS` and the
  library's `ONESTEP_JAX_*` settings (compiler options; not the cache directory or the malloc);
- the caller's `key`: for the experiment runner, the resolved config (the fields a rerun may
  change aside) and the teacher's content hash;
- per program: its name, and the tree structure, shapes, dtypes, weak types and shardings of
  its arguments, with the devices and this process's index.

Code that none of these sees (a loss function of one's own passed to the Trainer) would not be
noticed when it changes, which is why the Trainer only uses a cache it is given: the runner keeps
one per workdir (`<workdir>/executables`, under `train.compilation_cache`), where it serves the
resumes of that run, and one for the evaluation's samplers (`<workdir>/executables/samplers`).
A file that cannot be read is deleted and its program compiled again. A program that JAX's
persistent cache supplied is kept as that cache holds it (see `ExecutableCache.compile`).
`ExecutableCache.preload` reads a run's executables in a background thread, so that a resume
loads them while it restores or initialises its state (`Trainer.preload`).
"""
from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import importlib.metadata
import io
import os
import pickle
import platform
import sys
import threading
import time
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax._src import compilation_cache as _jax_compilation_cache
from jax._src.lib import _jax as _jaxlib
from jax._src.lib import xla_client
from jax.experimental import serialize_executable

from onestep_jax.atomic import atomic_path

# jax.monitoring duration events: the time `load` took (for a preloaded executable, the time it
# waited for it), and the time a preload took in its background thread
LOAD_EVENT = '/onestep_jax/executable_cache/load_duration'
PRELOAD_EVENT = '/onestep_jax/executable_cache/preload_duration'
_PERSISTENT_CACHE_HIT = '/jax/compilation_cache/cache_hits'  # jax/_src/compiler.py
PRELOAD_THREADS = 2  # see ExecutableCache.preload
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the library's settings that no program depends on: where caches live, which malloc runs
_ENV_OUTSIDE_PROGRAMS = ('ONESTEP_JAX_CACHE_DIR', 'ONESTEP_JAX_MALLOC')
_thread = threading.local()  # per thread: persistent-cache hits, the last executable it read


def _count_persistent_cache_hit(event: str, **_) -> None:
  if event == _PERSISTENT_CACHE_HIT:
    _thread.hits = getattr(_thread, 'hits', 0) + 1


def _keep_persistent_bytes(extract):
  """`extract` (JAX's `compilation_cache.extract_executable_and_time`), also noting the bytes of
  the executable that the persistent cache supplies, for `ExecutableCache.compile`."""
  @functools.wraps(extract)
  def extract_and_keep(entry):
    serialized, compile_time = extract(entry)
    _thread.persistent_bytes = serialized
    return serialized, compile_time
  extract_and_keep.keeps_persistent_bytes = True
  return extract_and_keep


jax.monitoring.register_event_listener(_count_persistent_cache_hit)
# A program that the persistent cache supplies is kept with the bytes it read (see
# ExecutableCache.compile); with a JAX that lacks these two private parts, it is not kept.
_extract = getattr(_jax_compilation_cache, 'extract_executable_and_time', None)
if (_extract is not None and hasattr(serialize_executable, '_JaxPjrtPickler')
    and not getattr(_extract, 'keeps_persistent_bytes', False)):
  _jax_compilation_cache.extract_executable_and_time = _keep_persistent_bytes(_extract)


def _sha(*parts: Any) -> str:
  h = hashlib.sha256()
  for part in parts:
    h.update(part if isinstance(part, bytes) else repr(part).encode())
    h.update(b'\0')
  return h.hexdigest()


def _cpu_flags() -> str:
  """The host CPU's instruction-set flags (an executable compiled for AVX-512 must not be
  loaded on a host without it)."""
  try:
    with open('/proc/cpuinfo') as f:
      return next((line for line in f if line.startswith(('flags', 'Features'))), '')
  except OSError:
    return platform.processor()


@functools.lru_cache(maxsize=None)
def _library_files_digest() -> str:
  """sha256 over the path and bytes of every file of the onestep_jax package."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(_PACKAGE_DIR):
    dirs[:] = sorted(d for d in dirs if d != '__pycache__')
    for name in sorted(files):
      path = os.path.join(root, name)
      h.update(os.path.relpath(path, _PACKAGE_DIR).encode() + b'\0')
      with open(path, 'rb') as f:
        h.update(f.read())
  return h.hexdigest()


def code_digest() -> str:
  """The part of every key that does not depend on the run: see the module docstring."""
  versions = {p: importlib.metadata.version(p) for p in _PACKAGES}
  config = sorted((k, repr(v)) for k, v in jax.config.values.items() if ' at 0x' not in repr(v))
  env = sorted((k, v) for k, v in os.environ.items() if k == 'XLA_FLAGS' or (
      k.startswith('ONESTEP_JAX_') and k not in _ENV_OUTSIDE_PROGRAMS))
  return _sha(_library_files_digest(), sys.version, versions, platform.machine(), _cpu_flags(),
              config, env)


def _devices(sharding: jax.sharding.Sharding) -> tuple:
  """(id, platform, kind) of the sharding's devices, in mesh order for a NamedSharding."""
  mesh = getattr(sharding, 'mesh', None)
  devices = (list(np.ravel(mesh.devices)) if isinstance(mesh, jax.sharding.Mesh)
             else sorted(sharding.device_set, key=lambda d: d.id))
  return tuple((d.id, d.platform, d.device_kind) for d in devices)


def _argument_signature(args: tuple) -> str:
  """Tree structure, shapes, dtypes, weak types and shardings of `args`."""
  leaves, tree = jax.tree.flatten(args)
  def leaf(x):
    aval = jax.typeof(x) if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) else np.asarray(x)
    sharding = getattr(x, 'sharding', None)
    return (tuple(aval.shape), str(aval.dtype), getattr(aval, 'weak_type', False),
            repr(sharding), None if sharding is None else _devices(sharding))
  return _sha(str(tree), [leaf(x) for x in leaves])


def _serialize(compiled: jax.stages.Compiled, xla_bytes: Optional[bytes] = None) -> tuple:
  """`serialize_executable.serialize(compiled)`, with `xla_bytes` in place of the XLA
  executable's own serialisation when given (see `ExecutableCache.compile`)."""
  # pylint: disable=protected-access
  if xla_bytes is None:
    return serialize_executable.serialize(compiled)
  if compiled._params.const_args:
    raise NotImplementedError('closed-over constants')

  class Pickler(serialize_executable._JaxPjrtPickler):
    def persistent_id(self, obj):
      if isinstance(obj, (xla_client.LoadedExecutable, _jaxlib.Executable)):
        return ('exec', xla_bytes)
      return super().persistent_id(obj)

  args_info, in_tree = jax.tree.flatten(compiled.args_info)
  with io.BytesIO() as f:
    Pickler(f).dump((compiled._executable._unloaded_executable, args_info, compiled._no_kwargs))
    return f.getvalue(), in_tree, compiled.out_tree


def load_or_compile(cache: Optional['ExecutableCache'], program: str, args: tuple,
                    lower: Callable[[], jax.stages.Lowered]) -> jax.stages.Compiled:
  """`program`'s executable for `args` from `cache`, or `lower()` compiled (and kept in `cache`);
  without a cache, compiled."""
  compiled = None if cache is None else cache.load(program, args)
  if compiled is not None:
    return compiled
  lowered = lower()
  return lowered.compile() if cache is None else cache.compile(program, args, lowered)


def _file_stem(program: str) -> str:
  """`program` as a part of a file name ('phase:fake_score' -> 'phase-fake_score')."""
  return ''.join(c if c.isalnum() or c in '_.' else '-' for c in program)


class ExecutableCache:
  """Executables of one run's programs in `directory`, keyed as the module docstring says.

  `key` identifies what the programs compute beyond `code_digest()` and their arguments (the
  runner passes the resolved config and the teacher's hash). On creation, files of this process
  written under another key are deleted: they can no longer be loaded. The directory is made
  at the first `store`.
  """

  def __init__(self, directory: str | os.PathLike, *, key: str):
    self.directory = os.path.abspath(os.fspath(directory))
    self._prefix = _sha(code_digest(), key)[:24]
    self._process = f'p{jax.process_index()}of{jax.process_count()}'
    self._preloading: dict[str, concurrent.futures.Future] = {}  # until `load` takes them
    self._preloaded: set[str] = set()  # every file `preload` has started to read
    for name in os.listdir(self.directory) if os.path.isdir(self.directory) else ():
      if name.endswith(f'.{self._process}.bin') and not name.startswith(self._prefix):
        os.remove(os.path.join(self.directory, name))

  def path(self, program: str, args: tuple) -> str:
    """The file of `program` compiled for `args`."""
    program_key = _sha(program, _argument_signature(args))[:24]
    return os.path.join(self.directory, f'{self._prefix}-{_file_stem(program)}-{program_key}.'
                                        f'{self._process}.bin')

  def preload(self, programs: Sequence[str]) -> None:
    """Starts reading every executable stored for `programs` (for any arguments) that no
    earlier call read, in that order in `PRELOAD_THREADS` background threads; `load` then waits
    for it instead of reading it. XLA deserialises without the GIL, so the reading overlaps with
    what the caller does meanwhile (a thread per program slowed the first phase's load and first
    run on 2 cores; two threads, against one, cut SiD's wait for its programs by a third and
    left the EDM step's start-up level: docs/RESULTS.md, "Loading the phases during the
    initialisation", "Two threads read the phases")."""
    if not os.path.isdir(self.directory):
      return
    names = sorted(os.listdir(self.directory))
    paths = [os.path.join(self.directory, name) for program in programs for name in names
             if name.startswith(f'{self._prefix}-{_file_stem(program)}-')
             and name.endswith(f'.{self._process}.bin')]
    paths = [p for p in dict.fromkeys(paths) if p not in self._preloaded]
    if not paths:
      return
    pool = concurrent.futures.ThreadPoolExecutor(PRELOAD_THREADS,
                                                 thread_name_prefix='executable_preload')
    for path in paths:
      self._preloading[path] = pool.submit(self._preload, path)
    self._preloaded.update(paths)
    pool.shutdown(wait=False)

  @staticmethod
  def _read(path: str) -> jax.stages.Compiled:
    with open(path, 'rb') as f:
      payload, in_tree, out_tree = pickle.load(f)
    return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)

  @classmethod
  def _preload(cls, path: str) -> jax.stages.Compiled:
    start = time.perf_counter()
    compiled = cls._read(path)
    jax.monitoring.record_event_duration_secs(PRELOAD_EVENT, time.perf_counter() - start)
    return compiled

  def load(self, program: str, args: tuple) -> Optional[jax.stages.Compiled]:
    """The executable stored for `program` and `args` (preloaded, or read now), or None (none
    stored, or unreadable: then the file is deleted with a warning)."""
    path = self.path(program, args)
    preloading = self._preloading.pop(path, None)
    if preloading is None and not os.path.exists(path):
      return None
    start = time.perf_counter()
    try:
      compiled = self._read(path) if preloading is None else preloading.result()
    except Exception as e:  # pylint: disable=broad-except
      warnings.warn(f'compiling {program!r} again: its stored executable {path} could not be '
                    f'loaded ({type(e).__name__}: {e}); deleted')
      if os.path.exists(path):
        os.remove(path)
      return None
    jax.monitoring.record_event_duration_secs(LOAD_EVENT, time.perf_counter() - start)
    return compiled

  def compile(self, program: str, args: tuple, lowered: jax.stages.Lowered
              ) -> jax.stages.Compiled:
    """`lowered` compiled, and written for `program` and `args`. When JAX's persistent cache
    supplied it, the bytes that cache read are written: jaxlib 0.10.2 serialises such an
    executable again without its kernels (it loads, then fails with 'Function ... not found'),
    and without them a workdir whose first run found its programs in that cache would trace and
    lower them at every resume. If those bytes were not seen (another JAX), it is not kept."""
    hits = getattr(_thread, 'hits', 0)
    _thread.persistent_bytes = None
    compiled = lowered.compile()
    supplied, _thread.persistent_bytes = _thread.persistent_bytes, None
    if getattr(_thread, 'hits', 0) == hits:
      self.store(program, args, compiled)
    elif supplied is not None:
      self.store(program, args, compiled, xla_bytes=supplied)
    return compiled

  def store(self, program: str, args: tuple, compiled: jax.stages.Compiled, *,
            xla_bytes: Optional[bytes] = None) -> None:
    """Writes `compiled` for `program` and `args` (atomically): compiled by XLA in this process,
    or, with `xla_bytes`, as JAX's persistent cache holds it; programs that JAX cannot serialise
    (closed-over constants) are left out with a warning."""
    try:
      payload = pickle.dumps(_serialize(compiled, xla_bytes))
    except (ValueError, NotImplementedError) as e:
      warnings.warn(f'{program!r} is not kept in {self.directory}: {e}')
      return
    os.makedirs(self.directory, exist_ok=True)
    with atomic_path(self.path(program, args)) as tmp, open(tmp, 'wb') as f:
      f.write(payload)
