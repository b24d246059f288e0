"""Compile time and steady-state time of one training step for each shipped config.

  python benchmarks/train_step.py [--steps 20] [--out benchmarks/results/train_step.json]

Also times the configuration in which the official PyTorch EDM code was measured on this
kind of machine (EDM-preconditioned SongUNet, DDPM++ settings, 32x32x3, model_channels 32,
channel_mult [1,2,2], one block per level, attention at 16, 10 classes, augment_dim 9, batch 16:
0.30 s per teacher-training step), on random images.
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onestep_jax.data import get_dataset  # noqa: E402
from onestep_jax.experiment.overrides import load_config_file  # noqa: E402
from onestep_jax.experiment.runner import resolve_config  # noqa: E402
from onestep_jax.methods import build_method  # noqa: E402
from onestep_jax.train.mesh import global_batch  # noqa: E402
from onestep_jax.train.trainer import Trainer  # noqa: E402

CONFIGS = ('teacher_toy2d:ring8', 'teacher_toy2d:ring8,flow', 'distill_toy2d:diff_instruct',
           'teacher_digits', 'teacher_fashion_mnist', 'edm_reference_32x32')


def edm_reference_config(tmp: str):
  """The teacher_digits:cond config with the EDM reference network on random 32x32 RGB images."""
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


def config_by_name(name: str, tmp: str):
  """The config of one of CONFIGS (`file:variant` under configs/, or the EDM reference)."""
  if name == 'edm_reference_32x32':
    config = edm_reference_config(tmp)
  else:
    file, _, variant = name.partition(':')
    spec = str(ROOT / 'configs' / f'{file}.py') + (f':{variant}' if variant else '')
    config = load_config_file(spec)
  config.train.compilation_cache = False
  return config


def build(config):
  """(dataset, method setup, trainer, initial state) of a config."""
  dataset = get_dataset(config.data.name, **dict(config.data.kwargs))
  config = resolve_config(config, dataset)
  setup = build_method(config, dataset)
  trainer = Trainer(groups=setup.groups, phases=setup.phases, stages=setup.stages,
                    batch_size=config.train.batch_size)
  state = trainer.init_state(setup.init_params(jax.random.PRNGKey(0)), key=jax.random.PRNGKey(1))
  return dataset, setup, trainer, state


def benchmark(config, steps: int) -> dict:
  t0 = time.perf_counter()
  dataset, setup, trainer, state = build(config)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  # Time steps past the warm-up stage so that every phase of the steady schedule is measured.
  first = max([s.until_step or 0 for s in setup.stages])
  times = []
  for i in range(steps + 1):
    step = first + i
    batch = global_batch(dataset.get_batch(step, config.train.batch_size, seed=0), trainer.mesh)
    t0 = time.perf_counter()
    state, metrics = trainer.train_step(state, batch, step=step)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  steady = statistics.median(times[1:])
  return {'batch_size': config.train.batch_size, 'init_s': init_s,
          'first_step_s': times[0], 'compile_s_estimate': times[0] - steady,
          'step_s_median': steady, 'samples_per_s': config.train.batch_size / steady,
          'schedule': [list(s.schedule) for s in setup.stages]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=20, help='timed steps after the first')
  parser.add_argument('--only', default='', help='comma-separated subset of ' + ','.join(CONFIGS))
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'train_step.json'))
  args = parser.parse_args()
  names = args.only.split(',') if args.only else list(CONFIGS)
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      results[name] = r = benchmark(config_by_name(name, tmp), args.steps)
      print(f'{name:32s} batch {r["batch_size"]:4d}  init {r["init_s"]:6.2f} s  compile '
            f'~{r["compile_s_estimate"]:6.2f} s  step {1000 * r["step_s_median"]:8.2f} ms  '
            f'{r["samples_per_s"]:9.1f} samples/s', flush=True)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  results['_machine'] = {'devices': [str(d) for d in jax.devices()], 'jax': jax.__version__,
                         'cpu_count': os.cpu_count()}
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
