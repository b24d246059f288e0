"""Final evaluation of a run: metrics.json with `<model>/<metric>@<nfe>` names, data floors on
held-out data, sampling times, a picture of each model's samples and the training curves."""
from __future__ import annotations

import json
import os
import time
import zlib
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from onestep_jax import xla_cpu
from onestep_jax.atomic import atomic_path
from onestep_jax.data import Dataset
from onestep_jax.data.registry import get_held_out
from onestep_jax.eval import mixture_metrics, sample_metrics
from onestep_jax.methods.base import Generator
from onestep_jax.methods.networks import random_labels
from onestep_jax.train.executable_cache import ExecutableCache, load_or_compile
from onestep_jax.train.metrics import read_metrics

IMAGE_NDIM = 3  # (H, W, C) examples are images
TRAINING_TIMINGS = ('init_time_s', 'train_time_s', 'train_steps_per_s')


def draw_samples(fn: Callable, params: Mapping[str, Any], *, num: int, batch_size: int,
                 key: jax.Array, num_classes: int) -> np.ndarray:
  """`num` samples from `fn(params, key, labels)`, a compiled sampler of `batch_size` samples."""
  out = []
  for i in range(-(-num // batch_size)):
    k_x, k_c = jax.random.split(jax.random.fold_in(key, i))
    out.append(np.asarray(fn(params, k_x, random_labels(k_c, batch_size, num_classes))))
  return np.concatenate(out)[:num]


def low_dim_metrics(x: np.ndarray, ref: np.ndarray, *, key: jax.Array,
                    mixture=None) -> dict[str, float]:
  """swd, mmd, energy (and mode_coverage, off_mode, nll for a known mixture) of x vs ref."""
  x2, r2 = x.reshape(len(x), -1), ref.reshape(len(ref), -1)
  out = {
      'swd': sample_metrics.sliced_wasserstein(x2, r2, key=key),
      'mmd': sample_metrics.mmd2(x2, r2),
      'energy': sample_metrics.energy_distance(x2, r2),
  }
  if mixture is not None:
    out['mode_coverage'] = mixture_metrics.mode_coverage(x2, mixture)
    out['off_mode'] = mixture_metrics.off_mode_fraction(x2, mixture)
    out['nll'] = mixture_metrics.nll(x2, mixture)
  return {k: float(v) for k, v in out.items()}


def plan_evaluation(data_config, dataset, *, num_samples: int) -> tuple[Optional[Dataset], int]:
  """The held-out data the final metrics compare against, and the evaluation size it allows.

  Called before training, so data too small for evaluation stops the run before any step.
  Returns (held_out, num): held_out is None when the source holds nothing out (its training
  data then stands in); num = min(num_samples, half the held-out examples), because the
  reference and the data floor's second sample are disjoint halves of it. Process 0 prints a
  line naming the data used and any reduction of eval.num_samples.
  """
  held_out = get_held_out(data_config.name, **data_config.kwargs.to_dict())
  source = held_out if held_out is not None else dataset
  notes = []
  if held_out is None:
    notes.append(f'{dataset.name!r} holds no data out of training; the final metrics compare '
                 'against its training data')
  elif held_out.num_examples is not None:
    notes.append(f'final metrics against the held-out test split of {dataset.name!r} '
                 f'({held_out.num_examples} examples, never trained on)')
  num = num_samples
  if source.num_examples is not None:
    num = min(num_samples, source.num_examples // 2)
    if num < 1:
      raise ValueError(f'{dataset.name!r}: evaluation needs at least 2 held-out examples (a '
                       f'reference and a data floor), the data has {source.num_examples}')
    if num < num_samples:
      notes.append(f'eval.num_samples {num_samples} -> {num}: half of the '
                   f'{source.num_examples} examples, so reference and floor sample are disjoint')
  if jax.process_index() == 0:
    for note in notes:
      print(f'evaluation: {note}', flush=True)
  return held_out, num


def reference_pair(data, num: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Two disjoint samples of `num` examples of `data`: the metrics' reference and the second
  sample of the data floors (halves of one subset of a finite set, else independent draws)."""
  if data.num_examples is None:
    return data.sample(num, seed=seed), data.sample(num, seed=seed + 1)
  x = data.sample(2 * num, seed=seed)
  return x[:num], x[num:]


def sample_generators(*, generators: tuple[Generator, ...], params: Mapping[str, Any],
                      num_samples: int, batch_size: int, seed: int, num_classes: int,
                      compiled: Optional[dict[str, Any]] = None, check_finite: bool = True,
                      executable_cache: Optional[ExecutableCache] = None
                      ) -> dict[str, tuple[Generator, np.ndarray, float]]:
  """`<model>_nfe<N>` -> (generator, its samples, the seconds they took after compiling).

  `compiled` keeps the compiled samplers across calls (filled on the first); with
  `check_finite`, non-finite samples raise FloatingPointError. With `executable_cache` (the
  runner's `sampler_executable_cache`), each sampler is loaded from it, or compiled and kept
  there, instead of being traced and lowered in every process.
  """
  key = jax.random.PRNGKey(seed)
  compiled = {} if compiled is None else compiled
  out = {}
  for g in generators:
    name = f'{g.model}_nfe{g.nfe}'
    size = min(batch_size, num_samples)
    if name not in compiled:
      fn = xla_cpu.jit(lambda p, k, labels, g=g: g.sample_fn(p, k, size, labels))
      # compiled ahead, outside the timing (a warm-up draw would sample a second time)
      args = (params, key, random_labels(key, size, num_classes))
      compiled[name] = load_or_compile(executable_cache, f'sample:{name}:{size}', args,
                                       lambda: fn.lower(*args))
    t0 = time.perf_counter()
    x = draw_samples(compiled[name], params, num=num_samples, batch_size=size,
                     key=jax.random.fold_in(key, zlib.crc32(g.model.encode())),
                     num_classes=num_classes)
    seconds = time.perf_counter() - t0
    if check_finite and not np.isfinite(x).all():
      raise FloatingPointError(f'{g.model} produced non-finite samples')
    out[name] = (g, x, seconds)
  return out


def save_sample_pictures(samples: Mapping[str, tuple[Generator, np.ndarray, float]], *,
                         workdir: str, reference: np.ndarray, mixture=None) -> list[str]:
  """samples_<name>.png of each model (image grid, or 2-D scatter over the reference); paths."""
  from onestep_jax.eval import plots  # matplotlib only when drawing

  paths = []
  for name, (g, x, _) in samples.items():
    path = os.path.join(workdir, f'samples_{name}.png')
    if x.ndim == 1 + IMAGE_NDIM:
      plots.save_image_grid(x[:64], path)
    elif x.ndim == 2 and x.shape[1] == 2:
      plots.save_scatter(x, path, reference=reference[:2000],
                         means=None if mixture is None else mixture.means,
                         title=f'{g.model}, NFE {g.nfe}')
    else:
      continue
    paths.append(path)
  return paths


def evaluate(*, samples: Mapping[str, tuple[Generator, np.ndarray, float]],
             reference: tuple[np.ndarray, np.ndarray], seed: int, mixture=None,
             image_metrics: Optional[Callable[[np.ndarray, np.ndarray], dict]] = None,
             floors: bool = True) -> dict[str, float]:
  """`<model>/<metric>@<nfe>` of every generator's samples against `reference[0]`.

  Data floors (`data/<metric>_floor`, unless `floors` is False) measure `reference[1]`,
  held-out data disjoint from the reference and of the same size, the same way: a model within
  a small factor of its floor is as close to the data as sampling noise allows.
  """
  ref, ref2 = reference
  key = jax.random.PRNGKey(seed)

  def measure(x):
    if ref.ndim == 1 + IMAGE_NDIM:
      return image_metrics(x, ref) if image_metrics is not None else {}
    return low_dim_metrics(x, ref, key=key, mixture=mixture)

  metrics = {f'data/{k}_floor': v for k, v in measure(ref2).items()} if floors else {}
  for g, x, seconds in samples.values():
    metrics.update({f'{g.model}/{k}@{g.nfe}': v for k, v in measure(x).items()})
    metrics[f'{g.model}/samples_per_s@{g.nfe}'] = len(x) / seconds
  return metrics


def previous_training_timings(path: str) -> dict[str, float]:
  """The training timings (TRAINING_TIMINGS) of an earlier metrics.json, if there is one."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    previous = json.load(f)
  return {k: previous[k] for k in TRAINING_TIMINGS if k in previous}


def save_training_curves(workdir: str) -> Optional[str]:
  """curves.png of the workdir's metrics.jsonl (losses and gradient norms per phase), and
  eval_curves.png when it holds evaluations made during training; the first's path, or None
  when there is no history yet."""
  from onestep_jax.eval import plots  # matplotlib only when drawing

  records = _history(workdir)
  if not records:
    return None
  path = os.path.join(workdir, 'curves.png')
  plots.save_training_curves(records, path)
  save_evaluation_curves(workdir)
  return path


def save_evaluation_curves(workdir: str) -> Optional[str]:
  """eval_curves.png of the evaluations made during training in the workdir's metrics.jsonl;
  its path, or None when there are none."""
  from onestep_jax.eval import plots  # matplotlib only when drawing

  records = [r for r in _history(workdir) if any(k.startswith('eval/') for k in r)]
  if not records:
    return None
  path = os.path.join(workdir, 'eval_curves.png')
  plots.save_evaluation_curves(records, path)
  return path


def _history(workdir: str) -> list[dict]:
  history = os.path.join(workdir, 'metrics.jsonl')
  return read_metrics(history) if os.path.exists(history) else []


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (temp file, then rename)."""
  with atomic_path(path) as tmp, open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
