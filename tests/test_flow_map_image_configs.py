"""configs/distill_digits.py:<flow-map method>: every variant loads with the flow-map fields, PD's
rounds end at a one-step student, and a 2-step run writes finite student/<metric>@<steps>."""
import math
import pathlib

import jax
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.experiment import image_metrics
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config, run
from onestep_jax.methods import build_method
from onestep_jax.methods.flow_map_config import FLOW_MAP_METHODS

from train_helpers.configs import assert_finite_image_metrics, export_tiny_unet, shorten_image_run

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(method):
  return load_config_file(f'{ROOT}/configs/distill_digits.py:{method}')


@pytest.mark.parametrize('method', sorted(FLOW_MAP_METHODS))
def test_every_flow_map_variant_loads(method):
  c = _config(method)
  m = c.method
  assert m.name == method and m.teacher == 'bundled:digits' and m.init_from_teacher is True
  assert tuple(m.sample_steps) == (1, 2, 4, 8)
  assert m.gamma == FLOW_MAP_METHODS[method][0]
  assert 'lr_generator' not in m and 'fake_score_steps' not in m  # no one-step fields
  if 'warmup_steps' in m:
    assert 0 < m.warmup_steps < c.train.num_steps
  if method == 'pd':  # halving rounds that fill the run and end at one student step
    rounds = int(math.log2(m.teacher_steps))
    assert rounds * m.round_steps == c.train.num_steps
    assert m.teacher_steps // 2**rounds == 1


def test_unknown_method_lists_both_families():
  with pytest.raises(ValueError, match='ayf_emd.*|.*sid'):
    _config('bogus')


def test_student_starts_as_the_teacher_with_a_zero_second_time_embedding():
  data = get_dataset('digits')
  setup = build_method(resolve_config(_config('ayf_emd'), data), data)
  params = jax.eval_shape(setup.init_params, jax.random.PRNGKey(0))
  student, teacher = params['student'], params['teacher']
  assert set(student) - set(teacher) == {'map_second_time'}
  params = setup.init_params(jax.random.PRNGKey(0))
  shared = {k: v for k, v in params['student'].items() if k in params['teacher']}
  assert jax.tree.all(jax.tree.map(np.array_equal, shared, params['teacher']))
  assert not any(np.any(l) for l in jax.tree.leaves(params['student']['map_second_time']))


def test_two_step_ayf_emd_run_writes_finite_student_metrics(tmp_path, monkeypatch):
  """Through the runner: the digits config with a tiny random U-Net teacher (with attention, so
  the JVP goes through it), the trainer, and the evaluation of teacher and student (the feature
  classifier trained for a few steps only). The bundled teacher is the same code path but takes
  minutes to compile on 2 cores."""
  monkeypatch.setattr(image_metrics, 'CLASSIFIER_STEPS', 5)
  c = _config('ayf_emd')
  c.method.teacher = export_tiny_unet(tmp_path / 'teacher')
  shorten_image_run(c)
  assert_finite_image_metrics(run(c, str(tmp_path / 'run'), progress=False))
