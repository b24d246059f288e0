"""Evaluations during training (`eval.every_steps`): the trained models' metrics in metrics.jsonl
and eval_curves.png, the same as the final evaluation's at the last step, training unchanged."""
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from onestep_jax.eval.plots import save_evaluation_curves
from onestep_jax.experiment import image_metrics
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import run
from onestep_jax.train.export import load_exported
from onestep_jax.train.metrics import read_metrics
from test_experiment import _config
from train_helpers.configs import TINY_UNET, export_tiny_unet, shorten_image_run

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _distill(every_steps):
  c = _config('distill_toy2d', 'diff_instruct', num_steps=4, save_every=2, log_every=2)
  c.eval.every_steps = every_steps
  return c


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('periodic')
  return {every: (root / str(every), run(_distill(every), str(root / str(every)), progress=False))
          for every in (0, 2)}


def test_students_are_evaluated_every_n_steps_and_the_frozen_teacher_is_not(runs):
  workdir, _ = runs[2]
  evaluations = [r for r in read_metrics(workdir / 'metrics.jsonl')
                 if any(k.startswith('eval/') for k in r)]
  assert [r['step'] for r in evaluations] == [2, 4]
  for r in evaluations:
    keys = {k for k in r if k.startswith('eval/')}
    assert {'eval/student/swd@1', 'eval/student/mmd@1', 'eval/student/off_mode@1',
            'eval/student/nll@1'} <= keys
    assert not any(k.startswith(('eval/teacher/', 'eval/data/')) or '_per_s@' in k
                   for k in keys)
  with Image.open(workdir / 'eval_curves.png') as img:
    assert img.width > img.height  # metrics side by side
  assert not (runs[0][0] / 'eval_curves.png').exists()


def test_last_evaluation_equals_the_final_one_and_training_is_unchanged(runs):
  (with_dir, final), (without_dir, final_without) = runs[2], runs[0]
  last = read_metrics(with_dir / 'metrics.jsonl')[-1]
  assert last['step'] == 4
  for k in ('swd', 'mmd', 'energy', 'off_mode', 'nll'):
    assert last[f'eval/student/{k}@1'] == pytest.approx(final[f'student/{k}@1'], rel=1e-6), k
    assert final[f'student/{k}@1'] == final_without[f'student/{k}@1'], k
  a, b = (load_exported(d / 'export').params for d in (with_dir, without_dir))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_a_trained_teacher_is_evaluated(tmp_path):
  c = _config('teacher_toy2d', 'ring8', num_steps=2, log_every=2)
  c.method.sample_steps = 2
  c.eval.every_steps = 1
  run(c, str(tmp_path), progress=False)
  steps = [r['step'] for r in read_metrics(tmp_path / 'metrics.jsonl')
           if 'eval/teacher/swd@3' in r]
  assert steps == [1, 2]


def test_image_students_are_evaluated_on_the_classifier_features(tmp_path, monkeypatch):
  """A tiny MeanFlow run on digits beside a frozen reference teacher (skipped)."""
  monkeypatch.setattr(image_metrics, 'CLASSIFIER_STEPS', 5)
  c = load_config_file(f'{ROOT}/configs/flowmap_digits.py:meanflow')
  c.net.kwargs.update(TINY_UNET)
  c.method.reference = export_tiny_unet(tmp_path / 'reference')
  shorten_image_run(c)
  c.eval.every_steps = 1
  run(c, str(tmp_path / 'run'), progress=False)
  evaluations = [r for r in read_metrics(tmp_path / 'run' / 'metrics.jsonl')
                 if any(k.startswith('eval/') for k in r)]
  assert [r['step'] for r in evaluations] == [1, 2]
  for r in evaluations:
    for nfe in (1, 2):
      assert np.isfinite([r[f'eval/student/{k}@{nfe}'] for k in ('fid', 'kid')]).all()
    assert not any(k.startswith('eval/teacher/') for k in r)


def test_evaluation_curves_need_evaluations(tmp_path):
  with pytest.raises(ValueError, match='no "eval/'):
    save_evaluation_curves([{'step': 1, 'a/loss': 1.0}], str(tmp_path / 'none.png'))


def test_a_negative_interval_is_refused_before_anything_is_written(tmp_path):
  with pytest.raises(ValueError, match=r'eval\.every_steps must be >= 0, got -2'):
    run(_distill(-2), str(tmp_path / 'run'), progress=False)
  assert not (tmp_path / 'run').exists()
