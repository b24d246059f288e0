"""Final metrics compare against held-out data: test splits, disjoint floor halves, .npy hold-out,
small and non-finite data caught before training, and off-mode mass of mixtures."""
import json
import pathlib

import jax
import ml_collections
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.data.arrays import load_arrays
from onestep_jax.data.registry import get_held_out
from onestep_jax.data.toy2d import ring8
from onestep_jax.experiment.evaluation import (low_dim_metrics, plan_evaluation, reference_pair,
                                               sample_generators)
from onestep_jax.methods.base import Generator
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import run

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _data_config(name, **kwargs):
  return ml_collections.ConfigDict({'name': name, 'kwargs': kwargs})


def _row_set(x):
  return {r.tobytes() for r in np.asarray(x, np.float32).reshape(len(x), -1)}


def test_digits_metrics_and_floors_use_disjoint_halves_of_the_test_split(capsys):
  train = get_dataset('digits')
  held_out, num = plan_evaluation(_data_config('digits'), train, num_samples=700)
  assert held_out.num_examples == 359 and num == 179
  out = capsys.readouterr().out
  assert 'held-out test split' in out and 'eval.num_samples 700 -> 179' in out
  ref, floor = reference_pair(held_out, num, seed=1234)
  assert len(ref) == len(floor) == 179
  test_rows = _row_set(get_dataset('digits', split='test').sample(359, seed=0))
  train_rows = _row_set(train.sample(train.num_examples, seed=0))
  ref_rows, floor_rows = _row_set(ref), _row_set(floor)
  assert ref_rows <= test_rows and floor_rows <= test_rows
  assert not ref_rows & floor_rows, 'the two floor halves share images'
  assert not (ref_rows | floor_rows) & train_rows, 'evaluation images were trained on'


def test_npy_holds_out_every_fifth_row(tmp_path):
  x = np.arange(100, dtype=np.float32).reshape(50, 2)
  np.save(tmp_path / 'p.npy', x)
  train = get_dataset('arrays', path=str(tmp_path / 'p.npy'))
  test = get_held_out('arrays', path=str(tmp_path / 'p.npy'))
  assert (train.num_examples, test.num_examples) == (40, 10)
  np.testing.assert_array_equal(np.sort(test.sample(10, seed=0)[:, 0]), x[4::5, 0])
  seen = np.concatenate([train.get_batch(s, 8, seed=0)['x'] for s in range(5)])
  assert not _row_set(seen) & _row_set(x[4::5])
  assert get_held_out('arrays', path=str(tmp_path / 'p.npy'), split='all') is None
  assert get_held_out('ring8') is not None  # toys: evaluation draws a stream training never uses


def test_npy_with_nan_or_inf_fails_at_load_naming_file_and_count(tmp_path):
  x = np.ones((20, 2), np.float32)
  x[3, 0], x[7, 1], x[8, 0] = np.nan, np.inf, -np.inf
  np.save(tmp_path / 'bad.npy', x)
  with pytest.raises(ValueError, match=r'bad\.npy: 3 NaN/Inf values'):
    load_arrays(str(tmp_path / 'bad.npy'))


def _teacher_config(npy, num_samples):
  c = load_config_file(f'{ROOT}/configs/teacher_toy2d.py:{npy}')
  c.train.compilation_cache = False
  c.train.num_steps = 4
  c.train.batch_size = 16
  c.train.log_every = 2
  c.net.kwargs.hidden_dim = 16
  c.method.sample_steps = 2
  c.eval.num_samples = num_samples
  c.eval.batch_size = 200
  return c


def test_small_npy_shrinks_evaluation_before_training(tmp_path, capsys):
  np.save(tmp_path / 'small.npy', np.random.RandomState(0).randn(60, 2).astype(np.float32))
  metrics = run(_teacher_config(tmp_path / 'small.npy', 400), str(tmp_path / 'w'),
                progress=False)
  out = capsys.readouterr().out
  assert 'eval.num_samples 400 -> 6' in out  # 12 held-out rows, two halves of 6
  config = json.loads((tmp_path / 'w' / 'config.json').read_text())
  assert config['eval']['num_samples'] == 6
  assert np.isfinite(metrics['teacher/swd@3']) and 'data/swd_floor' in metrics


def test_npy_too_small_to_evaluate_fails_before_training(tmp_path):
  np.save(tmp_path / 'tiny.npy', np.zeros((7, 2), np.float32))  # one held-out row
  with pytest.raises(ValueError, match='at least 2 held-out examples'):
    run(_teacher_config(tmp_path / 'tiny.npy', 400), str(tmp_path / 'w'), progress=False)
  assert not (tmp_path / 'w' / 'checkpoints').exists()
  assert not (tmp_path / 'w' / 'metrics.jsonl').exists()


def test_off_mode_exposes_a_student_smeared_around_the_ring():
  ds = ring8()
  exact, ref = ds.sample(800, seed=0), ds.sample(800, seed=1)
  angle = np.random.RandomState(0).uniform(0, 2 * np.pi, 800)
  smeared = np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32)  # the whole circle
  key = jax.random.PRNGKey(0)
  good = low_dim_metrics(exact, ref, key=key, mixture=ds.mixture)
  bad = low_dim_metrics(smeared, ref, key=key, mixture=ds.mixture)
  assert good['mode_coverage'] == bad['mode_coverage'] == 1.0
  assert good['off_mode'] < 0.01 and bad['off_mode'] > 0.4  # 4-std discs cover half the circle


@pytest.mark.parametrize('num_samples,batch_size,calls', [(8, 8, 1), (20, 8, 3)])
def test_evaluation_draws_each_batch_once(num_samples, batch_size, calls):
  # The sampler is compiled ahead, not warmed up by a draw: a single-batch evaluation (a 256-step
  # masked diffusion sampler, say) runs once, and the samples are the first num_samples drawn.
  drawn = []

  def sample_fn(params, key, num, labels):
    x = jax.random.normal(key, (num, 2)) + params['net']
    jax.debug.callback(lambda v: drawn.append(np.asarray(v)), x)
    return x

  out = sample_generators(generators=(Generator('student', 1, sample_fn),),
                          params={'net': np.float32(3.0)}, num_samples=num_samples,
                          batch_size=batch_size, seed=0, num_classes=0)
  generator, x, seconds = out['student_nfe1']
  assert len(drawn) == calls and seconds > 0
  np.testing.assert_array_equal(x, np.concatenate(drawn)[:num_samples])
