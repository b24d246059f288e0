"""Streaming statistics on 8 fake CPU devices and in 2 processes (2 devices each) equal those of
one device, for generator samples and for dataset images.

The features are bit-identical (the feature network sees each sample's row alone) and the
float64 sums differ only by the order of their merges (~1e-16); the Inception Score sums use
float32 logits whose matmul rounds differently for other per-device batch sizes (~1e-7).
"""
import os
import pathlib
import socket
import sys

import numpy as np
import pytest

from train_helpers import fid_stream
from train_helpers.processes import run_concurrently

SCRIPT = pathlib.Path(fid_stream.__file__)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The same streams on the single in-process device."""
  return fid_stream.run(tmp_path_factory.mktemp('one_device'))


def _run(args_per_process, timeout=180):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  run_concurrently([[sys.executable, str(SCRIPT), *a] for a in args_per_process], env=env,
                   timeout=timeout)


def _assert_same(results, reference):
  assert sorted(results) == sorted(reference)
  assert results['gen/stats/count'] == fid_stream.NUM_SAMPLES
  assert results['data/stats/count'] == fid_stream.DATA_ROWS
  for k, expected in reference.items():
    got = results[k]
    if k.endswith(('count', 'counts')):
      np.testing.assert_array_equal(got, expected, err_msg=k)
    elif k.endswith('kept'):  # the kept samples themselves, float32 (see below)
      np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=k)
    else:
      # float32 features of other per-device batch shapes: equal on an Intel Xeon, 2e-7 apart
      # (relative) on an AMD EPYC, whose XLA:CPU kernels depend on the shape.
      assert np.abs(got - expected).max() <= 1e-6 * np.abs(expected).max(), k


def test_eight_devices_match_one_device(reference, tmp_path):
  out = tmp_path / 'eight.npz'
  _run([['--out', str(out), '--devices', '8']])
  _assert_same(dict(np.load(out)), reference)


def test_two_processes_match_one_process(reference, tmp_path):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  out = tmp_path / 'two.npz'
  _run([['--out', str(out), '--devices', '2', '--num-processes', '2', '--process-id', str(i),
         '--port', str(port)] for i in range(2)])
  _assert_same(dict(np.load(out)), reference)
