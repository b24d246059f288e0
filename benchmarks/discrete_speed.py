"""Sampling speed of token models at equal sequence length and batch: the autoregressive
baseline with its KV cache (and without, for reference) against the masked diffusion DiT at the
teacher's step count and at the distilled students' fewer steps.

  python benchmarks/discrete_speed.py [--preset=markov|text] [--batch=32] [--repeats=5]

The networks and samplers are exactly those the CLI evaluates (built by the methods from
configs/mdlm_<preset>.py and configs/ar_<preset>.py, which share width, heads and depth), with
freshly initialised weights: sampling cost does not depend on the weights (the MDLM cache skips
the network after steps that unmask no token, which depends only on the schedule). A student is
the teacher's network sampled with fewer steps (SDTT keeps the architecture), so the DiT rows
at 8-16 steps are the students' speeds. Each sampler is compiled, then timed `--repeats` times;
figures are medians. Writes benchmarks/results/discrete_speed_<preset>.json.
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from step_timing import write_json  # noqa: E402

# preset -> (teacher steps, student steps: the SDTT configs' base_steps and final student)
PRESETS = {'markov': (256, (32, 8)), 'text': (128, (32, 8))}


def build(config_name: str, **method):
  """(generators, params) of a method configured by configs/<config_name>.py."""
  import jax
  from onestep_jax.data import get_dataset
  from onestep_jax.experiment.overrides import load_config_file
  from onestep_jax.methods import build_method, resolve_method_config
  c = load_config_file(str(ROOT / 'configs' / f'{config_name}.py'))
  c.method.update(method)
  dataset = get_dataset(c.data.name, **c.data.kwargs.to_dict())
  c = resolve_method_config(c, dataset)
  setup = build_method(c, dataset)
  return setup.generators, setup.init_params(jax.random.PRNGKey(0)), c


def time_sampler(fn, repeats: int) -> tuple[float, float]:
  """(compile + first call seconds, median seconds of `repeats` further calls) of fn(key)."""
  import jax
  t0 = time.perf_counter()
  jax.block_until_ready(fn(jax.random.PRNGKey(0)))
  first = time.perf_counter() - t0
  times = []
  for r in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(jax.random.PRNGKey(r + 1)))
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='markov', choices=sorted(PRESETS))
  parser.add_argument('--batch', type=int, default=32, help='sequences per sampler call')
  parser.add_argument('--repeats', type=int, default=5, help='timed calls per sampler')
  parser.add_argument('--out', default='', help='JSON path (default: benchmarks/results/'
                      'discrete_speed_<preset>.json)')
  args = parser.parse_args()
  import jax
  from onestep_jax.discrete import autoregressive as ar
  from onestep_jax.nets.causal_transformer import CausalTransformer

  teacher_steps, student_steps = PRESETS[args.preset]
  steps = (teacher_steps, *student_steps)
  dit_generators, dit_params, dit_config = build(f'mdlm_{args.preset}', sample_steps=steps)
  (ar_generator,), ar_params, ar_config = build(f'ar_{args.preset}')
  length = ar_generator.nfe
  module = CausalTransformer(**ar_config.net.kwargs)
  uncached = lambda p, k: ar.sample_uncached(
      lambda x: module.apply({'params': p['model']}, x), k, num=args.batch, length=length,
      bos_index=ar_config.method.bos_index)
  rows = [('ar', 'KV cache', length, ar_generator.sample_fn, ar_params),
          ('ar', 'no cache', length, lambda p, k, n, labels: uncached(p, k), ar_params)]
  for g in dit_generators:
    role = 'teacher' if g.nfe == teacher_steps else 'student'
    rows.append((f'mdlm_{role}', f'{g.nfe} steps, cache', g.nfe, g.sample_fn, dit_params))

  results = {}
  print(f'{args.preset}: length {length}, batch {args.batch}, DiT and causal transformer of '
        f'width {ar_config.net.kwargs.hidden_size}, {ar_config.net.kwargs.n_blocks} blocks; '
        f'median of {args.repeats} calls after compiling')
  for model, how, steps, sample_fn, params in rows:
    fn = jax.jit(lambda k, f=sample_fn, p=params: f(p, k, args.batch, None))
    first, seconds = time_sampler(fn, args.repeats)
    name = f'{model}@{steps}' + ('_nocache' if how == 'no cache' else '')
    results[name] = {'model': model, 'sampler': how, 'steps': steps, 'seconds_median': seconds,
                     'tokens_per_s': args.batch * length / seconds, 'compile_s': first - seconds}
    print(f'{name:20s} {how:18s} {seconds * 1e3:9.1f} ms/batch '
          f'{results[name]["tokens_per_s"]:12,.0f} tokens/s', flush=True)
  results['_settings'] = {
      'preset': args.preset, 'length': length, 'batch': args.batch, 'repeats': args.repeats,
      'dit': dit_config.net.kwargs.to_dict(), 'causal_transformer': ar_config.net.kwargs.to_dict(),
      'date': time.strftime('%Y-%m-%d %H:%M'), 'cpu_count': os.cpu_count(),
      'jax': jax.__version__}
  out = args.out or str(ROOT / 'benchmarks' / 'results' / f'discrete_speed_{args.preset}.json')
  write_json(out, results)


if __name__ == '__main__':
  main()
