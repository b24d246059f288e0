"""FID / KID / precision-recall of image samples on the features of an offline extractor:
the library's small classifier trained on the run's data, or a user's Inception-v3 weights."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from onestep_jax.data import get_dataset
from onestep_jax.eval import feature_metrics
from onestep_jax.eval.classifier import FeatureExtractor, train_classifier

CLASSIFIER_STEPS = 1000  # training steps of the feature classifier
HELD_OUT_SPLITS = {'digits': 'test', 'fashion_mnist': 'test'}  # for the reported accuracy


def classifier_features(dataset, *, data_kwargs: dict, workdir: str
                        ) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, float]]:
  """A classifier trained once per workdir (cached in eval_classifier/) and its test accuracy."""
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
  split = HELD_OUT_SPLITS.get(dataset.name)
  if split is not None:
    test = get_dataset(dataset.name, **{**data_kwargs, 'split': split})
    rows = test.get_batch(0, test.num_examples, seed=0)
    info['classifier/test_accuracy'] = extractor.accuracy(rows['x'], rows['label'])
  return extractor.features, info


def inception_features(path: str) -> Callable[[np.ndarray], np.ndarray]:
  """Inception-v3 pool3 features (pytorch-fid weights from a file) of images in [-1, 1]."""
  from onestep_jax.eval.inception import load_inception
  net = load_inception(path)
  return lambda x: net.features((np.asarray(x) + 1.0) / 2.0)


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
