"""experiments/fid_reference.py: reference statistics of both splits of a user's .npy of uint8
images, through the FID Inception (synthetic weights), in EDM's mu/sigma layout."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from onestep_jax.eval import fid_pipeline
from test_eval_inception import synthetic_state_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / 'experiments' / 'fid_reference.py')


def _env():
  return {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}


def test_reference_statistics_of_train_and_test_splits(tmp_path, fixtures_dir):
  with np.load(fixtures_dir / 'inception_fid_synthetic.npz') as archive:
    shapes = json.loads(bytes(archive['meta_json']).decode())['state_dict_shapes']
  np.savez(tmp_path / 'weights.npz', **synthetic_state_dict(shapes))
  images = np.random.RandomState(0).randint(0, 256, (15, 8, 8, 3), np.uint8)
  np.save(tmp_path / 'images.npy', images)
  out = subprocess.run(
      [sys.executable, SCRIPT, '--data=arrays',
       '--data_kwargs=' + json.dumps({'path': str(tmp_path / 'images.npy')}),
       '--splits=train,test', f'--weights={tmp_path / "weights.npz"}',
       f'--out={tmp_path / "refs" / "images-{split}.npz"}', '--batch_size=4', '--progress=false'],
      capture_output=True, text=True, env=_env(), timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  for split, count in (('train', 12), ('test', 3)):  # every fifth row is the test split
    path = tmp_path / 'refs' / f'images-{split}.npz'
    assert f'wrote {path}: {count} images' in out.stdout
    ref = fid_pipeline.load_reference(str(path), feature_dim=2048)
    features = ref.features.astype(np.float64)  # all images (fewer than --pr_num_samples)
    assert features.shape == (count, 2048)
    np.testing.assert_allclose(ref.mu, features.mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref.sigma, np.cov(features, rowvar=False), rtol=1e-9,
                               atol=1e-12 * np.abs(ref.sigma).max())
    source = json.loads(ref.source)
    assert source['kwargs']['split'] == split
    assert source['network'] == f'inception:{fid_pipeline.file_digest(tmp_path / "weights.npz")}'
  # Test rows are distinct images from training rows, so their statistics differ.
  train = fid_pipeline.load_reference(str(tmp_path / 'refs' / 'images-train.npz'), feature_dim=2048)
  assert not np.allclose(train.mu, ref.mu)


def test_several_splits_need_a_split_placeholder(tmp_path):
  out = subprocess.run([sys.executable, SCRIPT, '--data=digits', '--splits=train,test',
                        '--weights=w.npz', f'--out={tmp_path / "ref.npz"}'],
                       capture_output=True, text=True, env=_env(), timeout=120)
  assert out.returncode != 0 and 'must contain {split} to write 2 splits' in out.stderr
