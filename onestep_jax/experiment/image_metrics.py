"""FID / KID / precision-recall of image samples on the features of the library's small
classifier trained on the run's data (a user's Inception-v3 weights take the streaming path of
`inception_evaluation`)."""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np

from onestep_jax.data import Dataset
from onestep_jax.eval import feature_metrics
from onestep_jax.eval.classifier import FeatureExtractor, train_classifier

CLASSIFIER_STEPS = 1000  # training steps of the feature classifier


def classifier_features(dataset: Dataset, *, held_out: Optional[Dataset], workdir: str
                        ) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, float]]:
  """A classifier trained on `dataset` once per workdir (cached in eval_classifier/) and its
  accuracy on the labelled `held_out` data (reported when there is such data)."""
  if not dataset.num_classes:
    raise ValueError(f'dataset {dataset.name!r} has no labels to train the feature classifier; '
                     'set --config.eval.feature_extractor=<Inception-v3 .npz> instead')
  cache = os.path.join(workdir, 'eval_classifier')
  if os.path.exists(os.path.join(cache, 'export.json')):
    extractor = FeatureExtractor.load(cache)
  else:
    n = dataset.num_examples
    rows = dataset.get_batch(0, n, seed=0)  # one epoch: every training example once
    extractor = train_classifier(rows['x'], rows['label'], num_classes=dataset.num_classes,
                                 steps=CLASSIFIER_STEPS, batch_size=128, seed=0)
    extractor.save(cache)
  info = {}
  if held_out is not None and held_out.num_classes:
    rows = held_out.get_batch(0, held_out.num_examples, seed=0)
    info['classifier/test_accuracy'] = extractor.accuracy(rows['x'], rows['label'])
  return extractor.features, info


def feature_metric_fn(features: Callable[[np.ndarray], np.ndarray]
                      ) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
  """(samples, reference) -> fid, kid, precision, recall on `features`."""

  def measure(x, ref):
    fx, fr = features(x), features(ref)
    kid_mean, _ = feature_metrics.kid(fr, fx, subset_size=min(1000, len(fx), len(fr)))
    precision, recall = feature_metrics.precision_recall(fr, fx)
    return {'fid': feature_metrics.fid_from_features(fr, fx, method='eigh'), 'kid': kid_mean,
            'precision': precision, 'recall': recall}

  return measure
