"""Compile time, start-up, steady step time and peak memory of one training step per config.

  python benchmarks/train_step.py [--only=edm_reference_32x32,...] [--repeats=3] [--steps=15]
      [--warmup=3] [--warm_start [--warm_repeats=3]] [--parallel_compile] [--note=...]
      [--out benchmarks/results/train_step.json]

Every config runs in `--repeats` fresh processes (round-robin); the figures are medians over
processes of each process's median step time, also in units of a 2048^3 float32 matmul timed in
the same process (see benchmarks/step_timing.py). `edm_reference_32x32` is the setting in which
the official PyTorch EDM code was measured on this kind of machine (EDM-preconditioned SongUNet,
DDPM++ settings, 32x32x3, model_channels 32, channel_mult [1,2,2], one block per level,
attention at 16, 10 classes, augment_dim 9, batch 16, float32, random images): 0.279 s per
teacher-training step with an 87.8 ms matmul, i.e. 3.18 matmul units, and 570 MB peak RSS.
`--warm_start` also runs that config with a fresh persistent compilation cache and executable
cache (onestep_jax.train.executable_cache, as a workdir's rerun has them), in one cold process and
then `--warm_repeats` warm ones (all with `--parallel_compile` when it is given), and reports the
warm start-up (median) and its parts: network initialisation, state placement, loading the
compiled step, and the first run; and the CPU time of all threads from the initialisation to the
end of the first step, a lower bound on the start-up's wall time times the cores.
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402
from onestep_jax.experiment.allocator import reexec_with_tcmalloc  # noqa: E402

CONFIGS = ('teacher_toy2d:ring8', 'teacher_toy2d:ring8,flow', 'distill_toy2d:diff_instruct',
           'teacher_digits', 'teacher_fashion_mnist', 'edm_reference_32x32')
REFERENCE = 'edm_reference_32x32'


def edm_reference_config(tmp: str):
  """The teacher_digits:cond config with the EDM reference network on random 32x32 RGB images."""
  import numpy as np
  from onestep_jax.experiment.overrides import load_config_file
  rs = np.random.RandomState(0)
  path = os.path.join(tmp, 'random32.npz')
  np.savez(path, x=rs.randint(0, 256, (256, 32, 32, 3), np.uint8),
           label=rs.randint(0, 10, 256))
  c = load_config_file(str(ROOT / 'configs' / 'teacher_digits.py') + ':cond')
  c.data.name, c.data.kwargs = 'arrays', {'path': path, 'num_classes': 10}
  c.net.kwargs.update(img_resolution=32, in_channels=3, out_channels=3, channel_mult=(1, 2, 2),
                      attn_resolutions=(16,), augment_dim=9, label_dropout=0.0)
  c.train.batch_size = 16
  return c


def check_config_name(name: str) -> None:
  """Raises ValueError unless `name` is one of CONFIGS or `<file>[:<variant>]` of a file in
  configs/ (before any process or compile is started for it)."""
  if name not in CONFIGS and not (ROOT / 'configs' / f'{name.partition(":")[0]}.py').is_file():
    raise ValueError(f'unknown config {name!r}: use one of {", ".join(CONFIGS)}, or '
                     f'<file>[:<variant>] of a file in {ROOT / "configs"}')


def config_by_name(name: str, tmp: str):
  """The config of one of CONFIGS (`file:variant` under configs/, or the EDM reference)."""
  from onestep_jax.experiment.overrides import load_config_file
  if name == REFERENCE:
    config = edm_reference_config(tmp)
  else:
    file, _, variant = name.partition(':')
    spec = str(ROOT / 'configs' / f'{file}.py') + (f':{variant}' if variant else '')
    config = load_config_file(spec)
  config.train.compilation_cache = False
  return config


def build(config, executable_cache=None):
  """(dataset, method setup, trainer, initial state) of a config."""
  import jax
  _, dataset, setup, trainer = step_timing.build_iteration(config,
                                                          executable_cache=executable_cache)
  state = trainer.init_state(setup.init_params(jax.random.PRNGKey(0)), key=jax.random.PRNGKey(1))
  return dataset, setup, trainer, state


def child(name: str, args) -> dict:
  if args.cache_dir:
    from onestep_jax.train.compilation_cache import enable_compilation_cache
    enable_compilation_cache(args.cache_dir)
  with tempfile.TemporaryDirectory() as tmp:
    # the cold and warm processes' data at one path: it is in the config, so in the cache's key
    config = config_by_name(name, args.cache_dir or tmp)
    config.train.parallel_compile = args.parallel_compile
    config.train.compilation_cache = bool(args.cache_dir)  # and the executable cache beside it
    return step_timing.measure(config, steps=args.steps, warmup=args.warmup,
                               per_phase=args.per_phase, executable_cache_dir=args.cache_dir)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--only', default='', help='comma-separated subset of ' + ','.join(CONFIGS))
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes per config')
  parser.add_argument('--steps', type=int, default=15, help='timed steps per process')
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps first (compile)')
  parser.add_argument('--per_phase', action='store_true', help='also time each phase alone')
  parser.add_argument('--parallel_compile', action='store_true',
                      help='compile the phases at once (train.parallel_compile)')
  parser.add_argument('--note', default='', help='recorded in the JSON (e.g. machine load)')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'train_step.json'))
  step_timing.add_warm_start_flags(parser)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args)))
    return
  step_timing.check_warm_start_flags(parser, args)
  names = args.only.split(',') if args.only else list(CONFIGS)
  for name in names:
    try:
      check_config_name(name)
    except ValueError as e:
      parser.error(str(e))
  started = step_timing.machine()
  results = step_timing.time_in_children(__file__, names, args, what='step')
  if args.warm_start:
    results['_warm_start'] = step_timing.warm_start(__file__, REFERENCE, args)
  step_timing.write(args.out, results, started=started, repeats=args.repeats,
                    counts={'steps': args.steps, 'warmup': args.warmup}, note=args.note)


if __name__ == '__main__':
  reexec_with_tcmalloc()
  main()
