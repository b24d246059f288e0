"""Where the time of a training step goes, per op type, from XLA's own per-op trace (CPU/GPU).

  python benchmarks/profile_step.py [--config edm_reference_32x32] [--steps 5] [--all_cores]
                                    [--out benchmarks/results/profile_step.json]

Each phase of the config's steady schedule is run `--steps` times under `jax.profiler.trace`
with XLA's per-op trace events on; every executed HLO op is classified from the compiled
program: convolution forward / backward-input / backward-filter (from the traced JAX op and the
convolution's window: a filter gradient is a convolution whose window is the image), matrix
products, reductions (group norm, softmax), copies and transposes, and the rest (element-wise
fusions). Prints one table per phase (milliseconds per run, summed over the threads that ran each
op, so the total can exceed the wall time; and each category's share) and writes the JSON.
Configs are those of benchmarks/train_step.py, or any `<file>:<variant>` of configs/.

The process pins itself to one core before JAX starts, unless --all_cores. With more than one
thread, XLA:CPU's own convolutions (the filter gradients, which the library keeps out of YNNPACK)
run asynchronously on its thread pool, and their trace events time only the launch: on 2 cores
the EDM reference step's 49 filter gradients showed 0.04-1 ms each, on one core 1-15 ms. The
table also gives the process's CPU time that no op's event covers (`not attributed`: Python,
the runtime, and such asynchronous work), so a profile that misses work says so.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_cpu_enable_xprof_traceme=true').strip()

import jax  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from step_timing import write_json  # noqa: E402
from train_step import CONFIGS, ROOT, build, check_config_name, config_by_name  # noqa: E402

from onestep_jax.train.mesh import global_batch  # noqa: E402

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = [^=]*? (\w[\w-]*)\((.*)$')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%([\w.\-]+) ')


def _computations(hlo: str) -> dict[str, list[str]]:
  """HLO text -> {computation name: its instruction lines}."""
  out, current = {}, None
  for line in hlo.splitlines():
    m = _COMPUTATION.match(line)
    if m and line.rstrip().endswith('{'):
      current = out.setdefault(m.group(1), [])
    elif current is not None and line.strip() and line.strip() != '}':
      current.append(line)
  return out


def _conv_kind(line: str) -> str:
  """forward / backward-input / backward-filter of one HLO convolution line."""
  op_name = re.search(r'op_name="([^"]*)"', line)
  backward = op_name is not None and 'transpose(' in op_name.group(1)
  window = re.search(r'window=\{size=([\dx]+)', line)
  size = [int(s) for s in window.group(1).split('x')] if window else []
  if size and max(size) > 7:  # a window as large as the image: the kernel's gradient
    return 'conv backward-filter'
  return 'conv backward-input' if backward else 'conv forward'


def classify(hlo: str) -> dict[str, str]:
  """{HLO op name: category} for every instruction of every computation."""
  comps = _computations(hlo)
  calls = re.compile(r'calls=%([\w.\-]+)')

  def inner_ops(name, seen=()):
    lines = []
    for line in comps.get(name, []):
      lines.append(line)
      for callee in calls.findall(line):
        if callee not in seen:
          lines += inner_ops(callee, seen + (name,))
    return lines

  out = {}
  for lines in comps.values():
    for line in lines:
      m = _INSTRUCTION.match(line)
      if not m:
        continue
      name = m.group(1)
      body = [line] + [l for c in calls.findall(line) for l in inner_ops(c)]
      convs = [l for l in body if ' convolution(' in l]
      opcodes = {(_INSTRUCTION.match(l) or m).group(2) for l in body}
      if convs:
        out[name] = _conv_kind(convs[0])
      elif 'dot' in opcodes:
        out[name] = 'matrix product'
      elif 'reduce' in opcodes or 'reduce-window' in opcodes:
        out[name] = 'reduction (norms, softmax, sums)'
      elif opcodes <= {'transpose', 'copy', 'bitcast', 'parameter', 'fusion', 'slice',
                       'concatenate', 'pad', 'reshape', 'broadcast', 'tuple',
                       'get-tuple-element', 'dynamic-slice', 'dynamic-update-slice'}:
        out[name] = 'copy / transpose / slice'
      else:
        out[name] = 'element-wise'
  return out


def kernel_counts(hlo: str) -> dict[str, int]:
  """The fusions of a compiled program's entry computation (its kernels), and how many of them
  differ once names and metadata are set aside: XLA:CPU compiles identical kernels once, and its
  compile time follows the distinct count (benchmarks/unpack_offsets.py)."""
  comps = _computations(hlo)
  fingerprints = {}

  def fingerprint(name):
    if name not in fingerprints:
      fingerprints[name] = ''  # a computation that calls itself: not in HLO, but do not loop
      text = '\n'.join(re.sub(r', (metadata|backend_config)=.*$', '', line)
                       for line in comps.get(name, []))
      text = re.sub(r'(calls|to_apply)=%([\w.\-]+)',
                    lambda m: f'{m.group(1)}=[{fingerprint(m.group(2))}]', text)
      fingerprints[name] = re.sub(r'%[\w.\-]+', '%', text)
    return fingerprints[name]

  entry = next(name for name in comps if re.search(rf'^ENTRY %{re.escape(name)} ', hlo, re.M))
  kernels = [c for line in comps[entry] if ' fusion(' in line
             for c in re.findall(r'calls=%([\w.\-]+)', line)]
  return {'kernels': len(kernels), 'distinct_kernels': len({fingerprint(c) for c in kernels})}


def _op_times(trace_dir: str) -> dict[str, float]:
  """Total microseconds per HLO op name in the perfetto trace written under trace_dir."""
  path, = glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'), recursive=True)
  with gzip.open(path) as f:
    events = json.load(f)['traceEvents']
  times = collections.Counter()
  for e in events:
    op = e.get('args', {}).get('hlo_op')
    if e.get('ph') == 'X' and op:
      times[op] += e.get('dur', 0.0)
  return dict(times)


def profile_phase(trainer, state, batch, phase: str, steps: int) -> dict:
  fn = trainer._jitted(state, phase)
  hlo = fn.lower(*trainer.phase_args(state, batch, 0)).compile().as_text()
  categories = classify(hlo)
  state, m = fn(*trainer.phase_args(state, batch, 0))  # warm-up (compiled above, run once)
  jax.block_until_ready((state, m))
  start = time.perf_counter()
  for _ in range(steps):
    state, m = fn(*trainer.phase_args(state, batch, 0))
    jax.block_until_ready((state, m))
  untraced_ms = (time.perf_counter() - start) * 1e3 / steps
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      start, cpu_start = time.perf_counter(), time.process_time()
      for _ in range(steps):
        state, m = fn(*trainer.phase_args(state, batch, 0))
        jax.block_until_ready((state, m))
      wall_ms = (time.perf_counter() - start) * 1e3 / steps
      cpu_ms = (time.process_time() - cpu_start) * 1e3 / steps
    times = _op_times(tmp)
  per_category = collections.Counter()
  for op, us in times.items():
    per_category[categories.get(op, 'other (runtime)')] += us / 1e3 / steps
  total = sum(per_category.values())
  top = sorted(times.items(), key=lambda kv: -kv[1])[:8]
  return state, {
      **kernel_counts(hlo), 'ms_per_step': dict(per_category.most_common()), 'total_ms': total,
      'wall_ms': wall_ms, 'untraced_wall_ms': untraced_ms, 'cpu_ms': cpu_ms,
      'not_attributed_ms': cpu_ms - total,
      'top_ops': [{'op': op, 'category': categories.get(op, 'other (runtime)'),
                   'ms_per_step': us / 1e3 / steps} for op, us in top]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='edm_reference_32x32',
                      help='one of ' + ', '.join(CONFIGS) + ', or any configs/<file>.py:<variant>')
  parser.add_argument('--steps', type=int, default=5, help='profiled runs of each phase')
  parser.add_argument('--all_cores', action='store_true',
                      help='do not pin to one core (asynchronous convolutions go unattributed)')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'profile_step.json'))
  args = parser.parse_args()
  try:
    check_config_name(args.config)
  except ValueError as e:
    parser.error(str(e))
  if not args.all_cores:  # before JAX starts its backend and sizes its thread pools
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  with tempfile.TemporaryDirectory() as tmp:
    config = config_by_name(args.config, tmp)
    dataset, setup, trainer, state = build(config)
    step = max([s.until_step or 0 for s in setup.stages])
    batch = global_batch(dataset.get_batch(step, config.train.batch_size, seed=0), trainer.mesh)
    phases = {}
    for name, _ in setup.stages[-1].schedule:
      state, result = profile_phase(trainer, state, batch, name, args.steps)
      phases[name] = result
      print(f'\n{args.config}, phase {name!r}: {result["untraced_wall_ms"]:.1f} ms per run, '
            f'{result["wall_ms"]:.1f} ms traced; '
            f'{result["total_ms"]:.1f} ms in XLA ops, summed over the threads that ran them; '
            f'{result["kernels"]} kernels, {result["distinct_kernels"]} distinct')
      for category, ms in result['ms_per_step'].items():
        print(f'  {category:34s} {ms:8.1f} ms  {100 * ms / result["total_ms"]:5.1f}%')
      print(f'  {"not attributed (CPU time - ops)":34s} {result["not_attributed_ms"]:8.1f} ms'
            f'  of {result["cpu_ms"]:.1f} ms of CPU per run')
  out = {'config': args.config, 'steps': args.steps, 'phases': phases,
         'cores': sorted(os.sched_getaffinity(0)),
         'jax': jax.__version__, 'devices': [str(d) for d in jax.devices()],
         'cpu_count': os.cpu_count(), 'xla_flags': os.environ['XLA_FLAGS']}
  write_json(args.out, out)


if __name__ == '__main__':
  main()
