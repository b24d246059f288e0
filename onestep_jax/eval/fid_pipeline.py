"""The conventions behind the FIDs that papers report, as pure pieces.

1. Images in [-1, 1] become uint8 as EDM's generate.py writes its PNGs (Karras et al. 2022,
   NVlabs/edm): x * 127.5 + 128, clipped to [0, 255], truncated to uint8 (`quantize_uint8`).
2. uint8 images become FID Inception-v3 inputs as pytorch-fid reads PNGs: u / 255, bilinear
   resize to 299 x 299, mapped to [-1, 1]; the 2048-d pool3 features are float32
   (`inception_network`). The 1008 logits of the Inception Score are pool3 @ fc.weight^T without
   the bias, as in the original IS code and torch-fidelity's 'logits_unbiased'.
3. Statistics are accumulated on the host in float64: mean and unbiased covariance
   (`feature_metrics.FeatureStatistics`), the IS split sums (`inception_score`), and the
   features of the first `keep` samples for precision/recall (`ScoreAccumulator`).
4. Reference files hold 'mu' and 'sigma' like EDM's published ones (plus, when we write them,
   'count', 'features' and 'source'); `load_reference` refuses other layouts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.eval import feature_metrics
from onestep_jax.eval.inception import (FEATURE_DIM, FIDInceptionV3, preprocess, read_state_dict,
                                        variables_from_state_dict)
from onestep_jax.eval.inception_layers import PRECISION
from onestep_jax.eval.inception_score import NUM_SPLITS, InceptionScoreAccumulator

NUM_CLASSES = 1008  # Classes of the FID Inception's classifier (the IS logits).


def scale_for_uint8(x: jax.Array) -> jax.Array:
  """The first stage of `quantize_uint8`, x * 127.5; it may end a caller's jitted function."""
  return x * 127.5


@jax.jit
def uint8_from_scaled(y: jax.Array) -> jax.Array:
  """The second stage of `quantize_uint8`: (y + 128) clipped to [0, 255], truncated to uint8."""
  return jnp.floor(jnp.clip(y + 128.0, 0.0, 255.0)).astype(jnp.uint8)


def quantize_uint8(x: jax.Array) -> jax.Array:
  """EDM generate.py: (x * 127.5 + 128).clip(0, 255).to(torch.uint8), float32, bit for bit.

  PyTorch rounds the product and the sum separately. In one XLA kernel the two are contracted
  into a fused multiply-add (one rounding), which puts values whose x * 127.5 + 128 lies within
  a float32 rounding error of an integer one level below PyTorch's; hence two compiled stages.
  """
  return uint8_from_scaled(jax.jit(scale_for_uint8)(x))


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
  """A pure feature function of uint8 images and its variables."""
  # apply(variables, uint8 [B, H, W, C]) -> (features [B, feature_dim], logits [B, num_classes]),
  # both float32; jittable.
  apply: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
  variables: Any
  feature_dim: int
  num_classes: int
  identity: str  # names the network and its weights in statistics files and partial sums


def inception_outputs(variables: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """pool3 features and unbiased logits of NHWC images in [0, 1] (1 or 3 channels, any size)."""
  pool3 = FIDInceptionV3().apply(variables['inception'], preprocess(images))
  return pool3, jnp.matmul(pool3, variables['fc'], precision=PRECISION)


def inception_apply(variables: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`inception_outputs` of uint8 images read as pytorch-fid reads PNGs (u / 255, float32)."""
  return inception_outputs(variables, images.astype(jnp.float32) / 255.0)


def file_digest(path: str | os.PathLike[str]) -> str:
  """The first 16 hex digits of the SHA-256 of a file."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()[:16]


def inception_network(path: str | os.PathLike[str]) -> FeatureNetwork:
  """The FID Inception-v3 from a pytorch-fid weights file (.npz, or .pth with torch), with the
  classifier weights `fc.weight` [1008, 2048] that the Inception Score needs."""
  state_dict = read_state_dict(path)
  fc = state_dict.get('fc.weight')
  if fc is None or np.shape(fc) != (NUM_CLASSES, FEATURE_DIM):
    found = 'no fc.weight' if fc is None else f'fc.weight of shape {np.shape(fc)}'
    raise ValueError(f'{path}: the Inception Score needs fc.weight of shape '
                     f'({NUM_CLASSES}, {FEATURE_DIM}) (pt_inception-2015-12-05 has it); found '
                     f'{found}')
  variables = {'inception': variables_from_state_dict(state_dict),
               'fc': jnp.asarray(np.asarray(fc, np.float32).T)}
  return FeatureNetwork(apply=inception_apply, variables=variables, feature_dim=FEATURE_DIM,
                        num_classes=NUM_CLASSES, identity=f'inception:{file_digest(path)}')


class ScoreAccumulator:
  """What FID, IS and precision/recall need from a stream of samples with global indices
  0..num_samples-1: float64 feature statistics, IS split sums, and the features of the samples
  with index < keep. Disjoint parts (batches, processes) merge; their states travel exactly."""

  def __init__(self, *, num_samples: int, feature_dim: int, num_classes: int, keep: int,
               num_splits: int = NUM_SPLITS):
    self._kwargs = dict(num_samples=num_samples, feature_dim=feature_dim,
                        num_classes=num_classes, keep=keep, num_splits=num_splits)
    self.num_samples = num_samples
    self.keep = min(keep, num_samples)
    self.stats = feature_metrics.FeatureStatistics(dim=feature_dim)
    self.inception_score = InceptionScoreAccumulator(  # fewer splits only for tiny sets
        num_samples=num_samples, num_classes=num_classes,
        num_splits=min(num_splits, num_samples))
    self.kept_index = np.zeros((0,), np.int64)
    self.kept_features = np.zeros((0, feature_dim), np.float32)

  def empty_like(self) -> 'ScoreAccumulator':
    """A new, empty accumulator for the same set."""
    return ScoreAccumulator(**self._kwargs)

  def update(self, indices, features, logits) -> 'ScoreAccumulator':
    """Adds the samples at global `indices` [B] with their features [B, F] and logits [B, K]."""
    indices = np.asarray(indices, np.int64)
    features = np.asarray(features)
    self.stats.update(features)
    self.inception_score.update(indices, logits)
    kept = indices < self.keep
    if kept.any():
      self.kept_index = np.concatenate([self.kept_index, indices[kept]])
      self.kept_features = np.concatenate([self.kept_features,
                                           features[kept].astype(np.float32)])
    return self

  def merge(self, other: 'ScoreAccumulator') -> 'ScoreAccumulator':
    self.stats.merge(other.stats)
    self.inception_score.merge(other.inception_score)
    self.kept_index = np.concatenate([self.kept_index, other.kept_index])
    self.kept_features = np.concatenate([self.kept_features, other.kept_features])
    return self

  def sums(self) -> dict[str, np.ndarray]:
    """The float64 arrays of fixed shape (statistics and IS sums), exact under `load_sums`."""
    return {**{f'stats/{k}': v for k, v in self.stats.state().items()},
            **{f'is/{k}': v for k, v in self.inception_score.state().items()}}

  def state(self) -> dict[str, np.ndarray]:
    """Everything, as arrays (for a file)."""
    return {**self.sums(), 'kept_index': self.kept_index, 'kept_features': self.kept_features}

  def load_state(self, state) -> 'ScoreAccumulator':
    """Replaces the contents by `state` (from `state()`; kept arrays optional)."""
    self.stats = feature_metrics.FeatureStatistics.from_state(
        {k: state[f'stats/{k}'] for k in ('count', 'mean', 'm2')})
    self.inception_score.load_state({k: state[f'is/{k}'] for k in self.inception_score.state()})
    if 'kept_index' in state:
      self.kept_index = np.asarray(state['kept_index'], np.int64)
      self.kept_features = np.asarray(state['kept_features'], np.float32)
    return self

  @property
  def count(self) -> int:
    return self.stats.count

  def features_of_kept(self) -> np.ndarray:
    """[keep, F] features of samples 0..keep-1 in index order; all must be present once."""
    order = np.argsort(self.kept_index, kind='stable')
    if not np.array_equal(self.kept_index[order], np.arange(self.keep)):
      raise ValueError(f'expected the features of samples 0..{self.keep - 1} once each, got '
                       f'{len(self.kept_index)} rows')
    return self.kept_features[order]


@dataclasses.dataclass(frozen=True)
class Reference:
  """Reference statistics: mu [F], sigma [F, F] (float64), optionally the features of a subset
  (for precision/recall) and a description of their origin."""
  mu: np.ndarray
  sigma: np.ndarray
  features: Optional[np.ndarray] = None
  source: str = ''


def save_reference(path: str, acc: ScoreAccumulator, *, source: Any) -> None:
  """Writes mu, sigma, count, features (the kept subset, if any) and source (JSON) to `path`."""
  extra = {'features': acc.features_of_kept()} if acc.keep else {}
  acc.stats.save(path, source=np.array(json.dumps(source, sort_keys=True)), **extra)


def load_reference(path: str, *, feature_dim: int) -> Reference:
  """Reads a reference file of ours, EDM's or pytorch-fid's ('mu', 'sigma'; 'features' and
  'source' when present); refuses missing keys, wrong shapes and non-finite values."""
  mu, sigma = feature_metrics.load_statistics(path, dim=feature_dim)
  with np.load(path, allow_pickle=False) as data:
    features = data['features'] if 'features' in data.files else None
    source = str(data['source']) if 'source' in data.files else ''
  if features is not None and (features.ndim != 2 or features.shape[1] != feature_dim):
    raise ValueError(f'{path}: features have shape {features.shape}, expected [N, '
                     f'{feature_dim}]')
  return Reference(mu=mu, sigma=sigma, features=features, source=source)


def scores(acc: ScoreAccumulator, reference: Reference) -> dict[str, float]:
  """fid (pytorch-fid's sqrtm), is and is_std; precision and recall (k = 3) when the reference
  carries features and `acc` kept some."""
  out = {'fid': feature_metrics.frechet_distance(acc.stats.mean, acc.stats.covariance,
                                                 reference.mu, reference.sigma)}
  out['is'], out['is_std'] = acc.inception_score.result()
  if reference.features is not None and acc.keep:
    out['precision'], out['recall'] = feature_metrics.precision_recall(reference.features,
                                                                       acc.features_of_kept())
  return out
