"""Where the resident memory of a training step goes, stage by stage (issue 6).

  python benchmarks/memory_breakdown.py [--row=edm_reference_32x32 | --row=<method>[:<variant>]]
      [--steps=4] [--out=benchmarks/results/memory_breakdown.json]

Runs one row of benchmarks/train_step.py (the EDM reference step) or of
benchmarks/distill_step.py (a distillation iteration) in this process, under tcmalloc when it is
installed, and records after each stage (imports, method built, networks initialised, state
initialised, each phase compiled, each step): resident memory, and tcmalloc's own counts (live
allocations, heap mapped from the OS, freed pages it keeps, pages it has returned, and the freed
small objects its thread, central and transfer caches hold: `small_free_mb`). Also XLA's
buffer sizes of every compiled phase, the resident size of the largest mapped files (shared
libraries' code), and a timeline of memory while each phase compiles (`compile_timeline`: the
largest resident and live-allocated MB in each half second, sampled every 2 ms). Prints a table
and writes JSON.

`--separate_temporaries` turns off the trainer's one set of temporaries
(`Trainer(one_set_of_temporaries=False)`; without it, on one CPU device under tcmalloc, the
distillation iterations' phases keep their XLA temporaries side by side).
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

from onestep_jax.experiment.allocator import (allocator_in_use, reexec_with_tcmalloc,  # noqa: E402
                                              tcmalloc_property)

TCMALLOC_PROPERTIES = {'allocated_mb': 'generic.current_allocated_bytes',
                       'heap_mb': 'generic.heap_size',
                       'kept_free_mb': 'tcmalloc.pageheap_free_bytes',
                       'returned_mb': 'tcmalloc.pageheap_unmapped_bytes',
                       'thread_caches_mb': 'tcmalloc.thread_cache_free_bytes',
                       'central_caches_mb': 'tcmalloc.central_cache_free_bytes',
                       'transfer_caches_mb': 'tcmalloc.transfer_cache_free_bytes'}


def snapshot() -> dict:
  """Resident and peak memory, and tcmalloc's counts when it is the allocator, in MB."""
  import step_timing
  out = step_timing.memory_mb()
  if allocator_in_use() == 'tcmalloc':
    for name, prop in TCMALLOC_PROPERTIES.items():
      out[name] = tcmalloc_property(prop) / 2**20
    out['outside_heap_mb'] = out['rss_mb'] - (out['heap_mb'] - out['returned_mb'])
    out['small_free_mb'] = sum(out.pop(f'{k}_caches_mb')
                               for k in ('thread', 'central', 'transfer'))
  return out


class Timeline:
  """Samples snapshot() every `interval_s` on a thread while in a `with` block; `rows` keeps, per
  `bucket_s` of elapsed time, the largest value of each count."""

  def __init__(self, interval_s: float = 0.002, bucket_s: float = 0.5):
    self.interval_s, self.bucket_s, self.rows = interval_s, bucket_s, {}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    start = time.perf_counter()
    while not self._stop.is_set():
      snap = snapshot()
      bucket = round((time.perf_counter() - start) / self.bucket_s) * self.bucket_s
      row = self.rows.setdefault(bucket, {})
      for k in ('rss_mb', 'allocated_mb'):
        if k in snap:
          row[k] = max(row.get(k, 0.0), snap[k])
      self._stop.wait(self.interval_s)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()

  def as_list(self) -> list:
    return [{'t_s': t, **row} for t, row in sorted(self.rows.items())]


def mapped_files(top: int = 5) -> dict[str, float]:
  """Resident MB of the `top` largest file mappings (summed over each file's mappings)."""
  sizes, path = {}, None
  with open('/proc/self/smaps') as f:
    for line in f:
      fields = line.split()
      if '-' in fields[0] and len(fields) >= 5:  # a mapping's header line
        path = fields[5] if len(fields) > 5 and fields[5].startswith('/') else None
      elif fields[0] == 'Rss:' and path:
        sizes[path] = sizes.get(path, 0.0) + int(fields[1]) / 1024
  return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:top])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--row', default='edm_reference_32x32',
                      help='edm_reference_32x32, or a distill_step.py iteration '
                           '(<method>[:reuse|:twice|:shared])')
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--separate_temporaries', action='store_true',
                      help='Trainer(one_set_of_temporaries=False)')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                            'memory_breakdown.json'))
  args = parser.parse_args()
  from distill_step import check_names, distill_config
  from train_step import REFERENCE, edm_reference_config
  if args.row != REFERENCE:
    try:
      check_names([args.row])
    except ValueError as e:
      parser.error(f'{e}, or {REFERENCE}')
  reexec_with_tcmalloc()
  stages = {'start': snapshot()}
  import jax
  import step_timing
  import onestep_jax.experiment.runner  # noqa: F401  (what building an iteration imports)
  stages['imports'] = snapshot()

  with tempfile.TemporaryDirectory() as tmp:
    if args.row == REFERENCE:
      config = edm_reference_config(tmp)
      config.train.compilation_cache = False
    else:
      config, make_teacher = distill_config(args.row, tmp)
      make_teacher()
    config, dataset, setup, trainer = step_timing.build_iteration(
        config, one_set_of_temporaries=not args.separate_temporaries)
    stages['method_built'] = snapshot()
    params = jax.block_until_ready(setup.init_params(jax.random.PRNGKey(0)))
    stages['networks_initialised'] = snapshot()
    state = jax.block_until_ready(trainer.init_state(params, key=jax.random.PRNGKey(1)))
    del params
    stages['state_initialised'] = snapshot()
    first, batches = step_timing.steady_batches(config, dataset, setup, trainer, args.steps)
    xla, timelines = {}, {}
    for name, _ in setup.stages[-1].schedule:
      with Timeline() as timeline:  # memory while the phase is traced, lowered and compiled
        # pylint: disable-next=protected-access
        analysis = trainer._executable(
            name, *trainer._program_args(name, state, batches[0])).memory_analysis()
      timelines[name] = timeline.as_list()
      xla[name] = {k: getattr(analysis, f'{k}_size_in_bytes') / 2**20
                   for k in ('temp', 'argument', 'output', 'alias', 'generated_code')}
      stages[f'compiled_{name}'] = snapshot()
    for i, batch in enumerate(batches):
      state, _ = trainer.train_step(state, batch, step=first + i)
      jax.block_until_ready(state)
      stages[f'step_{i}'] = snapshot()

  result = {'row': args.row, 'allocator': allocator_in_use(),
            'one_set_of_temporaries': not args.separate_temporaries,
            'tcmalloc_environment': {k: v for k, v in os.environ.items()
                                     if k.startswith('TCMALLOC_')},
            'stages': stages,
            'xla_buffers_mb': xla, 'compile_timeline': timelines,
            'largest_mapped_files_mb': mapped_files(),
            'measured': step_timing.machine()}
  columns = ('rss_mb', 'allocated_mb', 'kept_free_mb', 'small_free_mb', 'outside_heap_mb')
  print(f'{"stage":24s}' + ''.join(f'{c:>17s}' for c in columns))
  for name, snap in stages.items():
    print(f'{name:24s}' + ''.join(f'{snap.get(c, float("nan")):17.0f}' for c in columns))
  print('XLA buffers (MB):', json.dumps(xla))
  for name, rows in timelines.items():
    key = 'allocated_mb' if 'allocated_mb' in rows[0] else 'rss_mb'
    top = max(rows, key=lambda r: r[key])
    print(f'compiling {name} ({rows[-1]["t_s"]:.1f} s): {key} peaked at {top[key]:.0f} MB '
          f'(resident {top["rss_mb"]:.0f} MB) {top["t_s"]:.1f} s in')
  print('largest mapped files (MB):', json.dumps(result['largest_mapped_files_mb']))
  step_timing.write_json(args.out, result)


if __name__ == '__main__':
  main()
