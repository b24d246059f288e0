"""Shared measurement code of benchmarks/train_step.py and benchmarks/distill_step.py.

Every configuration is measured in `repeats` fresh child processes, run round-robin over the
configurations so that a change of machine load hits all of them alike. Each child times, in
this order (with an executable cache, its phases are first preloaded, as a resumed run does:
`Trainer.preload`): the network initialisation, the training state's placement, the first step
(its tracing, lowering and XLA compilation, read from JAX's own compile events, are `compile_s`,
and each of the three is in `compile_parts`, with `load_s` for phases loaded from an executable
cache, the time the step waited for them; `first_run_s` is the rest of the first step beyond a
steady one, the programs' first run, in which XLA:CPU builds each YNNPACK fusion's runtime),
`warmup - 1` more steps, `steps` timed steps (their median is `step_s`), then a 2048^3
float32 matmul (`matmul_s`, the median of `MATMUL_REPEATS`). Peak RSS is the child's VmHWM
after the timed steps, before the phases' memory analysis and the matmul (RSS and VmHWM are also
recorded after each stage); `xla_temp_mb` is each compiled phase's temporary buffer size. The
parent reports, per configuration, the median over processes of each child's figures, every step
time also in matmul units (step_s / matmul_s of the same process), and the machine: date, JAX
version, CPU model, threads, load averages, the malloc in use and tcmalloc's cap on its thread
caches (the scripts restart themselves with tcmalloc when it is installed, as
experiments/main.py does: onestep_jax/experiment/allocator.py; ONESTEP_JAX_MALLOC=system
measures glibc's).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

MATMUL_SIZE = 2048
MATMUL_REPEATS = 10
# JAX's compile-time events (jax/_src/dispatch.py) -> their part of `compile_s`: tracing to a
# jaxpr, lowering to StableHLO, and the XLA compilation or persistent-cache retrieval.
COMPILE_EVENTS = {'/jax/core/compile/jaxpr_trace_duration': 'trace_s',
                  '/jax/core/compile/jaxpr_to_mlir_module_duration': 'lower_s',
                  '/jax/core/compile/backend_compile_duration': 'xla_s',
                  # a phase loaded from the run's executable cache instead of all three
                  '/onestep_jax/executable_cache/load_duration': 'load_s'}
# The persistent compilation cache's events (jax/_src/compiler.py, compilation_cache.py).
CACHE_RETRIEVAL_EVENT = '/jax/compilation_cache/cache_retrieval_time_sec'
CACHE_COUNT_EVENTS = {'/jax/compilation_cache/cache_hits': 'hits',
                      '/jax/compilation_cache/cache_misses': 'misses'}


def memory_mb() -> dict[str, float]:
  """Current (VmRSS) and peak (VmHWM) resident memory of this process, MB."""
  out = {}
  with open('/proc/self/status') as f:
    for line in f:
      key, _, value = line.partition(':')
      if key in ('VmRSS', 'VmHWM'):
        out['rss_mb' if key == 'VmRSS' else 'peak_rss_mb'] = int(value.split()[0]) / 1024
  return out


def matmul_seconds(size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS) -> float:
  """Median wall time of one jitted size^3 float32 matmul (after two warm-up runs)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  rs = np.random.RandomState(0)
  a, b = (jnp.asarray(rs.standard_normal((size, size)), jnp.float32) for _ in range(2))
  f = jax.jit(jnp.matmul)
  times = []
  for i in range(repeats + 2):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    if i >= 2:
      times.append(time.perf_counter() - t0)
  return statistics.median(times)


class CompileClock:
  """Sums JAX's tracing + lowering + compilation durations reported while it is entered
  (`seconds`), and each of the three (`parts`, keyed by the values of COMPILE_EVENTS); `cache`
  counts the persistent cache's hits and misses and the time spent reading hits (part of
  `xla_s`, which covers 'compile or get cached')."""

  def __enter__(self):
    import jax
    self.parts = dict.fromkeys(COMPILE_EVENTS.values(), 0.0)
    self.cache = {'hits': 0, 'misses': 0, 'retrieval_s': 0.0}
    self._listener = lambda event, duration, **_: self._add(event, duration)
    self._counter = lambda event, **_: self._count(event)
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    jax.monitoring.register_event_listener(self._counter)
    return self

  def _add(self, event: str, duration: float) -> None:
    if event in COMPILE_EVENTS:
      self.parts[COMPILE_EVENTS[event]] += duration
    elif event == CACHE_RETRIEVAL_EVENT:
      self.cache['retrieval_s'] += duration

  def _count(self, event: str) -> None:
    if event in CACHE_COUNT_EVENTS:
      self.cache[CACHE_COUNT_EVENTS[event]] += 1

  @property
  def seconds(self) -> float:
    return sum(self.parts.values())

  def __exit__(self, *exc):
    from jax._src import monitoring  # no public unregister in jax.monitoring
    monitoring.unregister_event_duration_listener(self._listener)
    monitoring.unregister_event_listener(self._counter)


def median_call_seconds(fn: Callable, args: Sequence[Any], calls: int, *, warmup: int = 1) -> float:
  """Median wall seconds of `calls` calls of fn(*args), each waited for, after `warmup` untimed
  calls (a jitted fn compiles in the first)."""
  import jax
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, CompileClock]:
  """(result, wall seconds, compile clock) of fn(), its outputs ready."""
  import jax
  with CompileClock() as clock:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    wall = time.perf_counter() - t0
  return out, wall, clock


def build_iteration(config, *, executable_cache_dir: str = '', **trainer_options) -> tuple:
  """(resolved config, dataset, built method, Trainer) for `config`, built as the experiment
  runner builds them; the Trainer's options come from `config.train` unless given. With
  `executable_cache_dir`, the trainer keeps its compiled phases there as the runner keeps them
  in a workdir."""
  from onestep_jax.data import get_dataset
  from onestep_jax.experiment.runner import resolve_config, run_executable_cache
  from onestep_jax.methods import build_method
  from onestep_jax.train.trainer import Trainer
  dataset = get_dataset(config.data.name, **dict(config.data.kwargs))
  config = resolve_config(config, dataset)
  setup = build_method(config, dataset)
  options = {'parallel_compile': config.train.parallel_compile,
             'one_set_of_temporaries': config.train.one_set_of_temporaries,
             'executable_cache': run_executable_cache(config, setup, executable_cache_dir)
                                 if executable_cache_dir else None, **trainer_options}
  trainer = Trainer(groups=setup.groups, phases=setup.phases, stages=setup.stages,
                    batch_size=config.train.batch_size, **options)
  return config, dataset, setup, trainer


def steady_batches(config, dataset, setup, trainer, count: int) -> tuple[int, list]:
  """The first step past the method's warm-up stages (so that every phase of the steady
  schedule runs) and the global batches of `count` steps from there."""
  from onestep_jax.train.mesh import global_batch
  first = max(s.until_step or 0 for s in setup.stages)
  return first, [global_batch(dataset.get_batch(first + i, config.train.batch_size, seed=0),
                              trainer.mesh) for i in range(count)]


def measure(config, *, steps: int, warmup: int, network_init: Optional[Callable] = None,
            per_phase: bool = False, executable_cache_dir: str = '') -> dict:
  """Times one config in this process; see the module docstring.

  `network_init()`, if given, is a network initialisation done before the method is built
  (e.g. the random teacher of a distillation benchmark); it is timed as `network_init_s`, and
  so is the method's own `init_params`. With `executable_cache_dir`, the trainer keeps its
  compiled phases there as the experiment runner keeps them in a workdir.
  """
  import jax

  r = {'load_avg_start': os.getloadavg()[0], 'memory_mb': {'start': memory_mb()}}
  net_s, net_cpu_s = 0.0, 0.0
  if network_init is not None:
    net_cpu_s = time.process_time()
    _, net_s, _ = _timed(network_init)
    net_cpu_s = time.process_time() - net_cpu_s
  config, dataset, setup, trainer = build_iteration(
      config, executable_cache_dir=executable_cache_dir)
  first, batches = steady_batches(config, dataset, setup, trainer, warmup + steps)
  cpu_start = time.process_time() - net_cpu_s  # CPU time of the start-up's parts only
  trainer.preload(first)  # as a resumed run does: see Trainer.preload
  params, init_s, init_clock = _timed(lambda: setup.init_params(jax.random.PRNGKey(0)))
  r['network_init_s'], r['network_init_compile_s'] = net_s + init_s, init_clock.seconds
  state, r['state_init_s'], _ = _timed(
      lambda: trainer.init_state(params, key=jax.random.PRNGKey(1)))
  r['memory_mb']['initialised'] = memory_mb()
  times, compile_s = [], []
  for i, batch in enumerate(batches):
    (state, _), wall, clock = _timed(lambda: trainer.train_step(state, batch, step=first + i))
    times.append(wall)
    compile_s.append(clock.seconds)
    if i == 0:
      r['start_up_cpu_s'] = time.process_time() - cpu_start  # all threads' user + system time
      r['memory_mb']['first_step'] = memory_mb()
      r['compile_parts'] = clock.parts
      r['compile_cache'] = clock.cache
  r['memory_mb']['end'] = memory_mb()
  # After the peak is read: memory_analysis() itself raised the Diff-Instruct iteration's peak
  # RSS by about 40 MB (docs/RESULTS.md, "The benchmarks' own peak").
  r['xla_temp_mb'] = xla_temp_mb(trainer)
  step_s = statistics.median(times[warmup:])
  r.update(first_step_s=times[0], compile_s=sum(compile_s[:1]),
           compile_s_after_first=sum(compile_s[1:]), step_s=step_s,
           first_run_s=times[0] - compile_s[0] - step_s,
           step_s_all=times[warmup:], batch_size=config.train.batch_size,
           schedule=[list(s.schedule) for s in setup.stages],
           peak_rss_mb=r['memory_mb']['end']['peak_rss_mb'])
  if per_phase:
    r['phase_s'], handed = {}, {}
    for name, _ in setup.stages[-1].schedule:  # a phase that takes runs after its giver
      phase, phase_times = trainer.phases[name], []
      for batch in batches[warmup:]:
        args = trainer.phase_args(state, batch, 0, handed.get(phase.takes))
        fn = trainer._executable(name, *args)  # pylint: disable=protected-access
        (state, _, *given), wall, _ = _timed(lambda: fn(*args))
        phase_times.append(wall)
      if phase.gives:
        handed[name] = given[0]
      r['phase_s'][name] = statistics.median(phase_times)
  r['matmul_s'] = matmul_seconds()  # last, so that its buffers do not count in peak_rss_mb
  r['load_avg_end'] = os.getloadavg()[0]
  return r


def xla_temp_mb(trainer) -> dict[str, float]:
  """Per compiled phase of `trainer` ('end' for the end of step), the temporary buffers XLA's
  buffer assignment gives it, MB: the step's working memory beyond its arguments and outputs."""
  return {str(phase or 'end'): executable.memory_analysis().temp_size_in_bytes / 2**20
          for phase, executable in trainer._executables.items()}  # pylint: disable=protected-access


def run_children(script: str, names: Sequence[str], *, repeats: int,
                 args: Sequence[str] = (), env: Optional[dict] = None,
                 on_result: Optional[Callable[[str, int, dict], None]] = None
                 ) -> dict[str, list[dict]]:
  """Runs `script --child=<name> *args` `repeats` times per name, round-robin; each child prints
  its result as JSON on its last line of output."""
  runs = {name: [] for name in names}
  for rep in range(repeats):
    for name in names:
      out = subprocess.run([sys.executable, script, f'--child={name}', *args],
                           capture_output=True, text=True, env=env)
      if out.returncode:  # the child's own error, not a CalledProcessError of the parent
        error = (out.stderr.strip().splitlines() or ['no error output'])[-1]
        raise SystemExit(f'{os.path.basename(script)} --child={name} failed with exit code '
                         f'{out.returncode}: {error}')
      runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
      if on_result is not None:
        on_result(name, rep, runs[name][-1])
  return runs


def time_in_children(script: str, names: Sequence[str], args, *, what: str) -> dict[str, dict]:
  """Runs each of `names` in `args.repeats` fresh processes of `script` (with the common flags
  --steps, --warmup, --per_phase, --parallel_compile), printing each process's figure (`what`:
  'step' or 'iteration') and each summary line; returns {name: summary with its 'runs'}."""
  flags = [f'--steps={args.steps}', f'--warmup={args.warmup}'] + (
      ['--per_phase'] if args.per_phase else []) + (
      ['--parallel_compile'] if args.parallel_compile else [])
  runs = run_children(
      script, names, repeats=args.repeats, args=flags,
      on_result=lambda n, i, r: print(f'  {n} process {i}: {what} {1000 * r["step_s"]:.1f} ms, '
                                      f'matmul {1000 * r["matmul_s"]:.1f} ms', flush=True))
  results = {}
  for name in names:
    results[name] = summary = summarize(runs[name])
    summary['runs'] = runs[name]
    print(format_row(name, summary), flush=True)
  return results


def summarize(runs: Sequence[dict]) -> dict:
  """Median over processes of each child's figures, and the matmul units."""
  med = lambda key: statistics.median(r[key] for r in runs)
  units = [r['step_s'] / r['matmul_s'] for r in runs]
  out = {
      'step_s': med('step_s'), 'step_matmul_units': statistics.median(units),
      'matmul_s': med('matmul_s'), 'compile_s': med('compile_s'),
      'compile_parts': {k: statistics.median(r['compile_parts'][k] for r in runs)
                        for k in COMPILE_EVENTS.values()},
      'network_init_s': med('network_init_s'), 'state_init_s': med('state_init_s'),
      'first_step_s': med('first_step_s'), 'first_run_s': med('first_run_s'),
      'peak_rss_mb': med('peak_rss_mb'),
      'peak_rss_mb_max': max(r['peak_rss_mb'] for r in runs),
      'xla_temp_mb': runs[0]['xla_temp_mb'],
      'batch_size': runs[0]['batch_size'], 'samples_per_s': runs[0]['batch_size'] / med('step_s'),
      'per_process': {k: [r[k] for r in runs] for k in
                      ('step_s', 'matmul_s', 'compile_s', 'first_run_s', 'network_init_s',
                       'peak_rss_mb',
                       'load_avg_start', 'load_avg_end')},
      'step_matmul_units_per_process': units,
      'schedule': runs[0]['schedule'],
  }
  if 'phase_s' in runs[0]:
    out['phase_s'] = {p: statistics.median(r['phase_s'][p] for r in runs)
                      for p in runs[0]['phase_s']}
    out['phase_matmul_units'] = {p: statistics.median(r['phase_s'][p] / r['matmul_s']
                                                      for r in runs) for p in out['phase_s']}
  return out


def add_warm_start_flags(parser: argparse.ArgumentParser) -> None:
  """--warm_start and --warm_repeats, and the children's --child and --cache_dir."""
  parser.add_argument('--warm_start', action='store_true',
                      help='also measure a cold start and warm starts with a fresh cache')
  parser.add_argument('--warm_repeats', type=int, default=3,
                      help='with --warm_start: warm processes (after one cold one)')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  parser.add_argument('--cache_dir', default='', help=argparse.SUPPRESS)


def check_warm_start_flags(parser: argparse.ArgumentParser, args) -> None:
  if args.warm_start and args.warm_repeats < 1:
    parser.error(f'--warm_repeats must be at least 1, got {args.warm_repeats}')


def warm_start(script: str, name: str, args) -> dict:
  """`name` with a fresh persistent cache and executable cache (`--cache_dir` of the children,
  as a workdir's rerun has them): one cold process, then `args.warm_repeats` warm ones (medians
  over those); prints and returns the cold and warm compile and start-up, and the start-up's
  parts: network initialisation, state placement, loading (the wait for the preloaded phases)
  and the first run, and the CPU time of all threads to the end of the first step."""
  with tempfile.TemporaryDirectory() as cache:
    runs = run_children(script, [name], repeats=1 + args.warm_repeats,
                        args=[f'--steps={args.warmup}', '--warmup=1', f'--cache_dir={cache}',
                              *(['--parallel_compile'] if args.parallel_compile else [])])[name]
  cold, warm = runs[0], runs[1:]
  start_up = lambda r: r['network_init_s'] + r['state_init_s'] + r['first_step_s'] - r['step_s']
  parts = {'network_init_s': 'network_init_s', 'state_init_s': 'state_init_s',
           'load_s': 'compile_s', 'first_run_s': 'first_run_s'}
  med = lambda f: statistics.median(f(r) for r in warm)
  w = {'cold_compile_s': cold['compile_s'], 'warm_compile_s': med(lambda r: r['compile_s']),
       'cold_compile_parts': cold['compile_parts'],
       'warm_compile_parts': {k: med(lambda r, k=k: r['compile_parts'][k])
                              for k in cold['compile_parts']},
       'warm_compile_cache': warm[-1]['compile_cache'],
       'cold_start_up_s': start_up(cold), 'warm_start_up_s': med(start_up),
       'warm_start_up_s_per_process': [start_up(r) for r in warm],
       'warm_start_up_parts': {k: med(lambda r, v=v: r[v]) for k, v in parts.items()},
       'warm_start_up_parts_per_process': [{k: r[v] for k, v in parts.items()} for r in warm],
       'start_up': 'network init + state placement + first step - a steady step '
                   '(= network init + state placement + loading + first run)',
       'warm_start_up_cpu_s': med(lambda r: r['start_up_cpu_s']),
       'warm_start_up_cpu_s_per_process': [r['start_up_cpu_s'] for r in warm],
       'start_up_cpu': 'CPU time of all threads from the initialisation (and the background '
                       'loading) to the end of the first step; divided by the cores, a lower '
                       'bound on the wall time of the start-up plus one step',
       'cores': os.cpu_count()}
  print(f'warm start ({name}, medians of {args.warm_repeats} warm processes): compile '
        f'{w["cold_compile_s"]:.2f} s cold, {w["warm_compile_s"]:.2f} s warm; start-up '
        f'{w["cold_start_up_s"]:.2f} s cold, {w["warm_start_up_s"]:.2f} s warm ('
        + ', '.join(f'{v:.2f}' for v in w['warm_start_up_s_per_process']) + ') = ' + ', '.join(
            f'{k} {v:.2f}' for k, v in w['warm_start_up_parts'].items()) + '; warm compile = '
        + ', '.join(f'{k} {v:.2f}' for k, v in w['warm_compile_parts'].items())
        + '; persistent cache: ' + ', '.join(f'{k} {v:.4g}'
                                             for k, v in w['warm_compile_cache'].items())
        + f'; CPU time to the end of the first step {w["warm_start_up_cpu_s"]:.2f} core-s '
          f'(at best {w["warm_start_up_cpu_s"] / w["cores"]:.2f} s on {w["cores"]} cores, against '
          f'{w["warm_start_up_s"] + med(lambda r: r["step_s"]):.2f} s start-up + a step)',
        flush=True)
  return w


def format_row(name: str, s: dict) -> str:
  """One printed line of a summary."""
  return (f'{name:28s} step {1000 * s["step_s"]:8.1f} ms = {s["step_matmul_units"]:6.2f} matmul '
          f'(matmul {1000 * s["matmul_s"]:.1f} ms)  compile {s["compile_s"]:5.1f} s '
          f'(trace {s["compile_parts"]["trace_s"]:.2f} s)  first run {s["first_run_s"]:4.2f} s  '
          f'net init {s["network_init_s"]:5.2f} s  peak RSS {s["peak_rss_mb"]:6.0f} MB')


def repeats_and_out(doc: str, *, repeats: int, out: str) -> argparse.Namespace:
  """Command-line --repeats (at least 1; default `repeats`) and --out (default
  benchmarks/results/`out`) of a micro-benchmark whose docstring is `doc`."""
  parser = argparse.ArgumentParser(description=doc.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=repeats)
  parser.add_argument('--out', default=str(pathlib.Path(__file__).resolve().parent / 'results' /
                                             out))
  args = parser.parse_args()
  if args.repeats < 1:
    parser.error(f'--repeats must be at least 1, not {args.repeats}')
  return args


def write_json(path: str, result: dict) -> None:
  """Writes `result` to `path`, making its folder (nothing when `path` is empty)."""
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
      json.dump(result, f, indent=1)
    print(f'wrote {path}')


def machine() -> dict:
  """Date, software versions, CPU model, threads and load: the context of the figures."""
  import jax
  import jaxlib
  from onestep_jax import xla_cpu
  from onestep_jax.experiment.allocator import allocator_in_use, tcmalloc_property
  model = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      model = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  options = xla_cpu.compiler_options() or {}
  return {'date_utc': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
          'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'python': platform.python_version(),
          'cpu_model': model, 'cpu_count': os.cpu_count(),
          'threads_available': len(os.sched_getaffinity(0)),
          'devices': [str(d) for d in jax.devices()],
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'load_avg': list(os.getloadavg()),
          'allocator': allocator_in_use(),
          'tcmalloc_thread_caches_bytes':
              tcmalloc_property('tcmalloc.max_total_thread_cache_bytes'),
          'ynn_fusion': options.get(xla_cpu.FLAG, 'xla default'),
          'cpu_opt_level': options.get(xla_cpu.OPT_LEVEL_FLAG, 'xla default'),
          'cpu_scheduler': options.get(xla_cpu.SCHEDULER_FLAG, 'xla default')}


def write(path: str, results: dict, *, started: dict, repeats: int, counts: dict,
          note: str) -> None:
  """Writes the results with the machine context at the start and at the end of the run
  (nothing when `path` is empty); `counts` names what each process timed, e.g.
  {'steps': 15, 'warmup': 3}."""
  results['_measured'] = {**started, 'load_avg_at_end': list(os.getloadavg()),
                          'repeats': repeats, **counts,
                          'matmul': f'{MATMUL_SIZE}^3 float32, median of {MATMUL_REPEATS}',
                          'note': note}
  write_json(path, results)
