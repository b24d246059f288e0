"""Final evaluation of a run: metrics.json with `<model>/<metric>@<nfe>` names, data floors,
sampling times, and a picture of each model's samples."""
from __future__ import annotations

import json
import os
import time
import zlib
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.eval import mixture_metrics, sample_metrics
from onestep_jax.atomic import atomic_path
from onestep_jax.methods.base import Generator
from onestep_jax.methods.networks import random_labels

IMAGE_NDIM = 3  # (H, W, C) examples are images


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
  """swd, mmd, energy (and mode_coverage, nll for a known mixture) of samples x vs ref."""
  x2, r2 = x.reshape(len(x), -1), ref.reshape(len(ref), -1)
  out = {
      'swd': sample_metrics.sliced_wasserstein(x2, r2, key=key),
      'mmd': sample_metrics.mmd2(x2[:2000], r2[:2000]),
      'energy': sample_metrics.energy_distance(x2[:2000], r2[:2000]),
  }
  if mixture is not None:
    out['mode_coverage'] = mixture_metrics.mode_coverage(x2, mixture)
    out['nll'] = mixture_metrics.nll(x2, mixture)
  return {k: float(v) for k, v in out.items()}


def sample_generators(*, generators: tuple[Generator, ...], params: Mapping[str, Any], dataset,
                      num_samples: int, batch_size: int, seed: int, num_classes: int,
                      workdir: str) -> dict[str, tuple[Generator, np.ndarray, float]]:
  """Samples of every generator (with the seconds they took), each also drawn as a picture."""
  from onestep_jax.eval import plots  # matplotlib only when drawing

  key = jax.random.PRNGKey(seed)
  mixture = getattr(dataset, 'mixture', None)
  reference = None if len(dataset.example_shape) == IMAGE_NDIM else dataset.sample(
      min(num_samples, 2000), seed=seed)
  out = {}
  for g in generators:
    size = min(batch_size, num_samples)
    fn = jax.jit(lambda p, k, labels, g=g: g.sample_fn(p, k, size, labels))
    draw = lambda n: draw_samples(fn, params, num=n, batch_size=size,
                                  key=jax.random.fold_in(key, zlib.crc32(g.model.encode())),
                                  num_classes=num_classes)
    draw(size)  # compile once, outside the timing
    t0 = time.perf_counter()
    x = draw(num_samples)
    seconds = time.perf_counter() - t0
    if not np.isfinite(x).all():
      raise FloatingPointError(f'{g.model} produced non-finite samples')
    name = f'{g.model}_nfe{g.nfe}'
    out[name] = (g, x, seconds)
    path = os.path.join(workdir, f'samples_{name}.png')
    if jax.process_index() != 0:
      continue
    if reference is None:
      plots.save_image_grid(x[:64], path)
    elif x.shape[1] == 2:
      plots.save_scatter(x, path, reference=reference,
                         means=None if mixture is None else mixture.means,
                         title=f'{g.model}, NFE {g.nfe}')
  return out


def evaluate(*, samples: Mapping[str, tuple[Generator, np.ndarray, float]], dataset,
             num_samples: int, seed: int,
             image_metrics: Optional[Callable[[np.ndarray, np.ndarray], dict]] = None
             ) -> dict[str, float]:
  """`<model>/<metric>@<nfe>` of every generator's samples against held-out data.

  Data floors (`data/<metric>_floor`) compare two independent data samples of the same size, so
  a model metric within a small factor of its floor is as close to the data as sampling noise
  allows.
  """
  ref = dataset.sample(num_samples, seed=seed)
  ref2 = dataset.sample(num_samples, seed=seed + 1)
  mixture = getattr(dataset, 'mixture', None)
  key = jax.random.PRNGKey(seed)

  def measure(x):
    if len(dataset.example_shape) == IMAGE_NDIM:
      return image_metrics(x, ref) if image_metrics is not None else {}
    return low_dim_metrics(x, ref, key=key, mixture=mixture)

  metrics = {f'data/{k}_floor': v for k, v in measure(ref2).items()}
  for g, x, seconds in samples.values():
    metrics.update({f'{g.model}/{k}@{g.nfe}': v for k, v in measure(x).items()})
    metrics[f'{g.model}/samples_per_s@{g.nfe}'] = len(x) / seconds
  return metrics


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (temp file, then rename)."""
  with atomic_path(path) as tmp, open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
