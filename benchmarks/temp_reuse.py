"""Why two phases' XLA temporaries sit side by side under tcmalloc (issue 6, memory).

  python benchmarks/temp_reuse.py [--rounds=4] [--out=benchmarks/results/temp_reuse.json]

Two small programs, `a` and `b`, whose temporary buffers XLA's buffer assignment makes 384 and
480 MB, alternate the way a distillation iteration's fake-score and generator phases do. After
each call (and `jax.block_until_ready`), tcmalloc's counts are read (see
benchmarks/memory_breakdown.py): live allocations, the heap mapped from the OS and resident
memory. Three ways of calling them, each in a fresh process:
  back_to_back  `b` right after `a` returned;
  pause         200 ms between them;
  reserve       as back_to_back, after one malloc + free of `b`'s temporary size first, so that
                the heap holds one free span large enough for either.
If `live_after_a_mb` is above the baseline, `a`'s temporaries were still allocated when its
outputs were ready (PJRT frees them after it marks the outputs ready), and `b` cannot reuse them.
The heap's growth shows whether `b` ever reused `a`'s freed pages. Writes JSON.
"""
import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

from onestep_jax.experiment.allocator import (allocator_in_use, malloc_and_free,  # noqa: E402
                                              reexec_with_tcmalloc)

MODES = ('back_to_back', 'pause', 'reserve')
ELEMENTS = 1 << 22  # 16 MB of float32 per intermediate


def programs():
  """`a` and `b`, compiled for one 16 MB vector: 12 and 15 such intermediates live at once."""
  import jax
  import jax.numpy as jnp

  def chain(x, k):
    ys = [jnp.sin(x * (i + 1)) for i in range(k)]
    return sum(jnp.sum(y * y[::-1]) for y in ys)

  x = jnp.ones((ELEMENTS,), jnp.float32)
  a = jax.jit(lambda v: chain(v, 12)).lower(x).compile()
  b = jax.jit(lambda v: chain(v, 15) * 2).lower(x).compile()
  return x, a, b


def child(mode: str, rounds: int) -> dict:
  import jax
  from memory_breakdown import snapshot
  x, a, b = programs()
  temps = {n: p.memory_analysis().temp_size_in_bytes for n, p in (('a', a), ('b', b))}
  if mode == 'reserve':
    malloc_and_free(temps['b'])
  temps = {n: t / 2**20 for n, t in temps.items()}
  base = snapshot()
  rows = []
  for i in range(rounds):
    jax.block_until_ready(a(x))
    after_a = snapshot()
    if mode == 'pause':
      time.sleep(0.2)
    jax.block_until_ready(b(x))
    after_b = snapshot()
    rows.append({'round': i, 'live_after_a_mb': after_a.get('allocated_mb'),
                 'heap_after_b_mb': after_b.get('heap_mb'), 'rss_after_b_mb': after_b['rss_mb']})
  return {'mode': mode, 'allocator': allocator_in_use(), 'temp_mb': temps,
          'baseline': {'live_mb': base.get('allocated_mb'), 'heap_mb': base.get('heap_mb'),
                       'rss_mb': base['rss_mb']},
          'rounds': rows}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=4)
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'temp_reuse.json'))
  parser.add_argument('--child', default='', choices=('',) + MODES, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.rounds < 1:
    parser.error('--rounds must be at least 1')
  reexec_with_tcmalloc()
  if allocator_in_use() != 'tcmalloc':
    raise SystemExit('error: this benchmark reads tcmalloc\'s counts; install it (Debian/Ubuntu: '
                     'apt-get install libtcmalloc-minimal4) and leave ONESTEP_JAX_MALLOC unset')
  if args.child:
    print(json.dumps(child(args.child, args.rounds)))
    return
  import step_timing
  runs = step_timing.run_children(__file__, MODES, repeats=1, args=[f'--rounds={args.rounds}'])
  results = [runs[mode][0] for mode in MODES]
  for r in results:
    base = r['baseline']
    print(f"{r['mode']:13s} temps a {r['temp_mb']['a']:.0f} MB, b {r['temp_mb']['b']:.0f} MB; "
          f"baseline live {base['live_mb']:.0f} MB, heap {base['heap_mb']:.0f} MB, resident "
          f"{base['rss_mb']:.0f} MB ({r['allocator']})")
    for row in r['rounds']:
      print(f"  round {row['round']}: live after a {row['live_after_a_mb']:.0f} MB; after b: heap "
            f"{row['heap_after_b_mb']:.0f} MB, resident {row['rss_after_b_mb']:.0f} MB")
  step_timing.write_json(args.out, {'modes': results, 'measured': step_timing.machine()})


if __name__ == '__main__':
  main()
