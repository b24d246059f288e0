"""Sampling to score: N images, from a generator or a dataset, streamed batch by batch through a
feature network on every device of every process, into exactly mergeable float64 sums.

Batch i of a generator holds the `batch_size` samples drawn with key fold_in(key(seed, model), i)
on a mesh over all devices (sampling, uint8 quantisation and features run sharded over the
batch; with JAX's partitionable threefry the samples do not depend on the device count). Each
process adds the rows it holds to its own `ScoreAccumulator`; at the end the processes exchange
their sums bit for bit and merge them in process order. Every `save_every` batches each process
saves its sums (`PartialSums`); since batch i depends only on (seed, i), an interrupted
evaluation resumes from the last save and ends with the uninterrupted numbers.
"""
from __future__ import annotations

import json
import os
import zlib
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from onestep_jax import xla_cpu
from onestep_jax.atomic import atomic_path
from onestep_jax.eval.fid_pipeline import (FeatureNetwork, Reference, ScoreAccumulator,
                                           inception_network, load_reference, save_reference,
                                           scale_for_uint8, scores, uint8_from_scaled)
from onestep_jax.methods.base import Generator
from onestep_jax.methods.networks import random_labels
from onestep_jax.train.mesh import batch_sharding, global_batch, make_mesh, replicated
from onestep_jax.train.preemption import Preempted, StopOnSigterm

SUMS_DIR = 'fid_sums'  # <workdir>/fid_sums/<model>_nfe<nfe>/: per-process partial sums
REFERENCE_FILE = 'fid_reference.npz'  # reference statistics computed from the run's data
KEEP_SAVES = 2  # saves kept per process (processes may be one save apart when interrupted)

# images(i) -> (uint8 images of batch i, sharded over the batch; count of non-finite values).
ImagesFn = Callable[[int], tuple[jax.Array, jax.Array]]


def check_batch_size(batch_size: int, mesh) -> None:
  if batch_size < 1 or batch_size % mesh.size or batch_size % jax.process_count():
    raise ValueError(f'eval.inception.batch_size {batch_size} must be a positive multiple of '
                     f'the {mesh.size} devices and {jax.process_count()} processes')


def generator_images(g: Generator, params: Mapping[str, Any], *, seed: int, batch_size: int,
                     num_classes: int, mesh) -> ImagesFn:
  """Batches of `g`'s samples (labels uniform over `num_classes` when conditional), quantised."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(g.model.encode()))

  def scaled_images(params, i):
    k_x, k_c = jax.random.split(jax.random.fold_in(key, i))
    x = g.sample_fn(params, k_x, batch_size, random_labels(k_c, batch_size, num_classes))
    return scale_for_uint8(x), jnp.sum(~jnp.isfinite(x))

  fn = xla_cpu.jit(scaled_images, out_shardings=(batch_sharding(mesh), replicated(mesh)))

  def images(i):
    scaled, bad = fn(params, np.uint32(i))
    return uint8_from_scaled(scaled), bad

  return images


def data_images(dataset, *, batch_size: int, mesh, seed: int = 0) -> ImagesFn:
  """Batches of a dataset in the order of its first epoch (each process reads its own rows)."""
  scale = jax.jit(lambda x: (scale_for_uint8(x), jnp.sum(~jnp.isfinite(x))),
                  out_shardings=(batch_sharding(mesh), replicated(mesh)))

  def images(i):
    local = dataset.get_batch(i, batch_size, seed=seed, process_index=jax.process_index(),
                              process_count=jax.process_count())['x']
    scaled, bad = scale(global_batch(local, mesh))
    return uint8_from_scaled(scaled), bad

  return images


def _allgather(tree: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Every process's arrays stacked on a leading process axis, bit for bit (8-byte dtypes travel
  as uint32 pairs: JAX would otherwise cast float64 to float32)."""
  tree = {k: np.asarray(v) for k, v in tree.items()}
  if jax.process_count() == 1:
    return {k: v[None] for k, v in tree.items()}
  wire = {k: np.ascontiguousarray(v).reshape(-1) for k, v in tree.items()}
  wire = {k: w.view(np.uint32) if w.dtype.itemsize == 8 else w for k, w in wire.items()}
  got = multihost_utils.process_allgather(wire)
  p = jax.process_count()
  return {k: np.asarray(got[k]).reshape(p, -1).view(v.dtype).reshape((p,) + v.shape)
          for k, v in tree.items()}


def merge_processes(acc: ScoreAccumulator) -> ScoreAccumulator:
  """The accumulator of all processes' samples (the same on every process)."""
  if jax.process_count() == 1:
    return acc
  sums = _allgather(acc.sums())
  merged = acc.empty_like()
  for p in range(jax.process_count()):
    merged.merge(acc.empty_like().load_state({k: v[p] for k, v in sums.items()}))
  # Kept features: each process holds its own rows; pad to a common length to gather them.
  rows = int(_allgather({'n': np.int32(len(acc.kept_index))})['n'].max())
  pad = rows - len(acc.kept_index)
  kept = _allgather({
      'index': np.concatenate([acc.kept_index, np.full(pad, -1, np.int64)]),
      'features': np.concatenate([acc.kept_features,
                                  np.zeros((pad, acc.kept_features.shape[1]), np.float32)])})
  valid = kept['index'] >= 0
  merged.kept_index, merged.kept_features = kept['index'][valid], kept['features'][valid]
  return merged


class PartialSums:
  """This process's sums after a number of batches, saved in `directory` so that an interrupted
  run resumes. Files of another `fingerprint` (another checkpoint, seed, size or network) are
  deleted when found."""

  def __init__(self, directory: str, fingerprint: str):
    self.directory = directory
    self.fingerprint = fingerprint
    self._suffix = f'.p{jax.process_index()}of{jax.process_count()}.npz'

  def _own(self) -> dict[int, str]:
    if not os.path.isdir(self.directory):
      return {}
    return {int(name[1:].split('.')[0]): os.path.join(self.directory, name)
            for name in os.listdir(self.directory)
            if name.startswith('b') and name.endswith(self._suffix)}

  def save(self, acc: ScoreAccumulator, batches: int) -> None:
    os.makedirs(self.directory, exist_ok=True)
    path = os.path.join(self.directory, f'b{batches:09d}{self._suffix}')
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
      np.savez(f, fingerprint=np.array(self.fingerprint), **acc.state())
    own = self._own()
    for b in sorted(own)[:-KEEP_SAVES]:
      os.remove(own[b])

  def _matches(self, path: str) -> bool:
    try:
      with np.load(path, allow_pickle=False) as data:
        return str(data['fingerprint']) == self.fingerprint
    except (OSError, ValueError, KeyError):
      return False

  def restore(self, acc: ScoreAccumulator) -> int:
    """Loads into `acc` the newest save that every process has; returns its batch count (0 if
    there is none). A collective: every process calls it."""
    own = {}
    for b, path in self._own().items():
      if self._matches(path):
        own[b] = path
      else:
        os.remove(path)
    newest = sorted(own)[-KEEP_SAVES:]
    available = np.full(KEEP_SAVES, -1, np.int64)
    available[:len(newest)] = newest
    per_process = _allgather({'b': available})['b']
    common = set.intersection(*(set(row.tolist()) for row in per_process)) - {-1}
    if not common:
      return 0
    batches = max(common)
    with np.load(own[batches], allow_pickle=False) as data:
      acc.load_state({k: data[k] for k in data.files if k != 'fingerprint'})
    return batches


def _local_rows(features: jax.Array, logits: jax.Array):
  """(first global row, features, logits) of each batch block held by this process."""
  for f, l in zip(features.addressable_shards, logits.addressable_shards):
    if f.replica_id == 0:
      yield f.index[0].start or 0, np.asarray(f.data), np.asarray(l.data)


def accumulate(images: ImagesFn, network: FeatureNetwork, *, num_samples: int, batch_size: int,
               mesh, keep: int, sums: Optional[PartialSums] = None, save_every: int = 0,
               progress: bool = False, desc: str = 'features') -> ScoreAccumulator:
  """Features of samples 0..num_samples-1 (batches of `batch_size`, the last one cut), merged
  over processes. With `sums`, resumes from and saves to it (every `save_every` batches and at
  the end), and on SIGTERM saves after the current batch and raises `Preempted`.

  Raises:
    FloatingPointError: a batch of images has non-finite values.
  """
  check_batch_size(batch_size, mesh)
  num_batches = -(-num_samples // batch_size)
  features_fn = xla_cpu.jit(network.apply, out_shardings=(batch_sharding(mesh),) * 2)
  variables = jax.device_put(network.variables, replicated(mesh))
  acc = ScoreAccumulator(num_samples=num_samples, feature_dim=network.feature_dim,
                         num_classes=network.num_classes, keep=keep)
  start = 0 if sums is None else sums.restore(acc)
  bar = tqdm.tqdm(total=num_batches, initial=start, desc=desc, dynamic_ncols=True,
                  disable=not progress or jax.process_index() != 0)
  try:
    with StopOnSigterm() as sigterm:
      for i in range(start, num_batches):
        x, bad = images(i)
        bad = int(np.asarray(bad.addressable_data(0)))
        if bad:
          raise FloatingPointError(f'{desc}: batch {i} has {bad} non-finite values')
        features, logits = features_fn(variables, x)
        for row, f, l in _local_rows(features, logits):
          index = i * batch_size + row + np.arange(f.shape[0])
          valid = index < num_samples
          acc.update(index[valid], f[valid], l[valid])
        bar.update(1)
        if sums is None:
          continue
        at_save = i + 1 == num_batches or (save_every and (i + 1) % save_every == 0)
        stop = i + 1 < num_batches and sigterm.should_stop(bool(at_save))
        if at_save or stop:
          sums.save(acc, i + 1)
        if stop:
          raise Preempted(f'{desc}: {i + 1} of {num_batches} batches')
  finally:
    bar.close()
  return merge_processes(acc)


def reference_statistics(dataset, network: FeatureNetwork, *, batch_size: int, keep: int,
                         num_samples: Optional[int] = None, mesh=None, progress: bool = False
                         ) -> ScoreAccumulator:
  """Statistics of `num_samples` distinct examples of `dataset` (default: all of them)."""
  mesh = make_mesh() if mesh is None else mesh
  num = num_samples or dataset.num_examples
  if num is None:
    raise ValueError(f'{dataset.name!r} is an endless source: give the number of samples')
  if dataset.num_examples is not None and num > dataset.num_examples:
    raise ValueError(f'{dataset.name!r} has {dataset.num_examples} examples, fewer than {num}')
  return accumulate(data_images(dataset, batch_size=batch_size, mesh=mesh), network,
                    num_samples=num, batch_size=batch_size, mesh=mesh, keep=keep,
                    progress=progress, desc=f'{dataset.name} reference')


def run_reference(config, dataset, network: FeatureNetwork, *, workdir: str, mesh,
                  progress: bool) -> Reference:
  """The reference of eval.inception: the given file, or statistics of the run's training data
  (all of it) cached in <workdir>/fid_reference.npz."""
  e = config.eval.inception
  if e.reference:
    return load_reference(e.reference, feature_dim=network.feature_dim)
  path = os.path.join(workdir, REFERENCE_FILE)
  source = json.dumps({'data': config.data.name, 'kwargs': config.data.kwargs.to_dict(),
                       'network': network.identity, 'keep': e.pr_num_samples}, sort_keys=True)
  if os.path.exists(path):
    reference = load_reference(path, feature_dim=network.feature_dim)
    if reference.source == source:
      return reference
  acc = reference_statistics(dataset, network, batch_size=e.batch_size, keep=e.pr_num_samples,
                             mesh=mesh, progress=progress)
  if jax.process_index() == 0:
    save_reference(path, acc, source=json.loads(source))
  return Reference(mu=acc.stats.mean, sigma=acc.stats.covariance,
                   features=acc.features_of_kept(), source=source)


def evaluate(*, config, dataset, generators: tuple[Generator, ...], params: Mapping[str, Any],
             workdir: str, run_identity: str, progress: bool) -> dict[str, float]:
  """`<model>/{fid,is,is_std,precision,recall}@<nfe>` of eval.inception.num_samples samples
  of each generator on the FID Inception (weights: eval.feature_extractor); writes each model's
  statistics to <workdir>/fid_stats_<model>_nfe<nfe>.npz (mu, sigma, count)."""
  e = config.eval.inception
  network = inception_network(config.eval.feature_extractor)
  mesh = make_mesh()
  check_batch_size(e.batch_size, mesh)
  os.makedirs(workdir, exist_ok=True)
  reference = run_reference(config, dataset, network, workdir=workdir, mesh=mesh,
                            progress=progress)
  if jax.process_index() == 0:
    given = e.reference or os.path.join(workdir, REFERENCE_FILE)
    print(f'evaluation: FID against {given}'
          + ('' if e.reference else f' (the training data {config.data.name!r})')
          + ('' if reference.features is not None else
             '; it holds no features, so precision and recall are skipped'), flush=True)
  num_classes = dataset.num_classes if config.data.conditional else 0
  metrics = {}
  for g in generators:
    name = f'{g.model}_nfe{g.nfe}'
    fingerprint = json.dumps({
        'model': g.model, 'nfe': g.nfe, 'run': run_identity, 'network': network.identity,
        'num_samples': e.num_samples, 'batch_size': e.batch_size, 'keep': e.pr_num_samples,
        'seed': config.eval.seed, 'num_classes': num_classes,
        'processes': jax.process_count()}, sort_keys=True)
    acc = accumulate(
        generator_images(g, params, seed=config.eval.seed, batch_size=e.batch_size,
                         num_classes=num_classes, mesh=mesh),
        network, num_samples=e.num_samples, batch_size=e.batch_size, mesh=mesh,
        keep=e.pr_num_samples, sums=PartialSums(os.path.join(workdir, SUMS_DIR, name),
                                                fingerprint),
        save_every=e.save_every, progress=progress, desc=f'{g.model} NFE {g.nfe}')
    if jax.process_index() == 0:
      acc.stats.save(os.path.join(workdir, f'fid_stats_{name}.npz'))
    metrics.update({f'{g.model}/{k}@{g.nfe}': v for k, v in scores(acc, reference).items()})
  return metrics
