"""Sampling to score with Inception weights: `inception_evaluation.evaluate` on a tiny generator,
and `--mode=evaluate` of a tiny digits teacher, with a tiny feature network standing in for the
Inception-v3 (whose 299x299 inputs are slow on CPU).

An interrupted evaluation resumes from its last partial sums and ends with the numbers of an
uninterrupted one; a finished one is reused; a given reference file replaces the computed one.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.eval import feature_metrics, fid_pipeline
from onestep_jax.experiment import inception_evaluation
from onestep_jax.train.preemption import Preempted
from train_helpers import fid_evaluate, fid_stream
from train_helpers.fid_evaluate import FAIL_AT, KEEP, NUM, SHAPE, Interrupted

KEYS = ('fid', 'is', 'is_std', 'precision', 'recall')


@pytest.fixture
def seen():
  """The batch indices drawn from generators; `seen['fail_at']` arms an interruption."""
  seen = {'batches': [], 'fail_at': None}
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(inception_evaluation, 'inception_network', inception_evaluation.inception_network)
    patch.setattr(inception_evaluation, 'generator_images', inception_evaluation.generator_images)
    fid_evaluate.patch(seen)  # undone when the context exits
    yield seen


def _scores(metrics, model='toy', nfe=1):
  return {k: metrics[f'{model}/{k}@{nfe}'] for k in KEYS if f'{model}/{k}@{nfe}' in metrics}


def _evaluate(workdir, seen, *, fail_at=None, sigterm_at=None, **inception):
  """evaluate() of the tiny generator; returns (metrics, batches drawn)."""
  seen['batches'].clear()
  seen['fail_at'], seen['sigterm_at'] = fail_at, sigterm_at
  metrics = inception_evaluation.evaluate(
      config=fid_evaluate.config(**inception), dataset=get_dataset('digits'),
      generators=(fid_stream.tiny_generator('toy', 1, shape=SHAPE),), params={'scale': 0.7},
      workdir=str(workdir), run_identity='test', progress=False)
  return metrics, list(seen['batches'])


def test_evaluate_resumes_reuses_and_writes_statistics(seen, tmp_path):
  straight, drawn = _evaluate(tmp_path / 'straight', seen)
  assert drawn == list(range(7)) and sorted(_scores(straight)) == sorted(KEYS)
  assert 0 < straight['toy/precision@1'] < 1 and straight['toy/is@1'] > 1.01
  with pytest.raises(Interrupted):
    _evaluate(tmp_path / 'cut', seen, fail_at=FAIL_AT)
  resumed, drawn = _evaluate(tmp_path / 'cut', seen)
  assert drawn == [4, 5, 6]
  assert _scores(resumed) == _scores(straight)
  reused, drawn = _evaluate(tmp_path / 'cut', seen)  # finished: nothing is drawn again
  assert drawn == [] and _scores(reused) == _scores(straight)
  # Another sample size is another evaluation: it starts afresh.
  _, drawn = _evaluate(tmp_path / 'cut', seen, num_samples=NUM - 10)
  assert drawn == list(range(5))
  # Statistics beside metrics.json, and the reference computed from the training split.
  stats = fid_pipeline.load_reference(str(tmp_path / 'straight' / 'fid_stats_toy_nfe1.npz'),
                                      feature_dim=fid_stream.FEATURES)
  reference = fid_pipeline.load_reference(str(tmp_path / 'straight' / 'fid_reference.npz'),
                                          feature_dim=fid_stream.FEATURES)
  assert reference.features.shape == (KEEP, fid_stream.FEATURES)
  with np.load(tmp_path / 'straight' / 'fid_reference.npz') as data:
    assert int(data['count']) == get_dataset('digits').num_examples
  assert straight['toy/fid@1'] == feature_metrics.frechet_distance(
      stats.mu, stats.sigma, reference.mu, reference.sigma)


def test_sigterm_saves_after_the_current_batch_and_the_rerun_goes_on(seen, tmp_path):
  straight, _ = _evaluate(tmp_path / 'straight', seen)
  with pytest.raises(Preempted) as stop:
    _evaluate(tmp_path / 'cut', seen, sigterm_at=2)  # between the saves after batches 2 and 4
  assert stop.value.code == 143 and stop.value.saved == 'toy NFE 1: 3 of 7 batches'
  resumed, drawn = _evaluate(tmp_path / 'cut', seen)
  assert drawn == [3, 4, 5, 6] and _scores(resumed) == _scores(straight)


def test_a_given_reference_file_replaces_the_computed_one(seen, tmp_path):
  computed, _ = _evaluate(tmp_path / 'a', seen)
  full = str(tmp_path / 'a' / 'fid_reference.npz')
  given, _ = _evaluate(tmp_path / 'b', seen, reference=full)
  assert _scores(given) == _scores(computed)
  assert not (tmp_path / 'b' / 'fid_reference.npz').exists()
  with np.load(full) as data:  # EDM's layout: FID and IS, no precision/recall
    np.savez(tmp_path / 'edm.npz', mu=data['mu'], sigma=data['sigma'])
  edm, _ = _evaluate(tmp_path / 'b', seen, reference=str(tmp_path / 'edm.npz'))
  assert sorted(_scores(edm)) == ['fid', 'is', 'is_std']
  assert edm['toy/fid@1'] == computed['toy/fid@1']
  np.savez(tmp_path / 'wide.npz', mu=np.zeros(2048), sigma=np.eye(2048))
  with pytest.raises(ValueError, match=r'mu has shape \(2048,\), expected \[6\]'):
    _evaluate(tmp_path / 'b', seen, reference=str(tmp_path / 'wide.npz'))


def test_interrupted_mode_evaluate_resumes_with_the_same_numbers(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, fid_evaluate.__file__, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  # Training ended; its final evaluation stopped at batch FAIL_AT; --mode=evaluate went on.
  assert result['interrupted'] == list(range(FAIL_AT))
  assert result['resumed_batches'] == [4, 5, 6]
  assert result['straight_batches'] == list(range(7))
  resumed = _scores(result['resumed'], 'teacher')
  assert sorted(resumed) == sorted(KEYS)
  assert resumed == _scores(result['straight'], 'teacher')
  metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
  assert _scores(metrics, 'teacher') == resumed
  with np.load(tmp_path / 'run' / 'fid_stats_teacher_nfe1.npz') as data:
    assert int(data['count']) == NUM
