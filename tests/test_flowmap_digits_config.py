"""configs/flowmap_digits.py:meanflow|shortcut: the teacher-free flow maps on the bundled digits
load with the digits teacher's network and schedule, and a short run writes finite image metrics
at every student step count, beside a reference teacher."""
import pathlib

import pytest

from onestep_jax.experiment import image_metrics
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import run
from onestep_jax.methods.flow_map_config import TEACHER_FREE_METHODS
from train_helpers.configs import TINY_UNET, assert_finite_image_metrics, export_tiny_unet, shorten_image_run

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(method):
  return load_config_file(f'{ROOT}/configs/flowmap_digits.py:{method}')


@pytest.mark.parametrize('method', sorted(TEACHER_FREE_METHODS))
def test_variant_loads_with_the_digits_teachers_network(method):
  c, teacher = _config(method), load_config_file(f'{ROOT}/configs/teacher_digits.py')
  assert c.method.name == method and c.data.name == 'digits'
  assert c.net.to_dict() == teacher.net.to_dict()
  assert c.train.num_steps == teacher.train.num_steps
  assert c.method.reference == 'bundled:digits' and c.method.sigma_data == 0.5
  assert tuple(c.method.sample_steps) == (1, 2, 4, 8)


def test_unknown_method_lists_the_valid_ones():
  with pytest.raises(ValueError, match='meanflow'):
    _config('ayf_emd')


@pytest.mark.parametrize('method', sorted(TEACHER_FREE_METHODS))
def test_short_run_writes_finite_image_metrics(tmp_path, monkeypatch, method):
  """Through the runner with a tiny U-Net student (attention included, so MeanFlow's JVP goes
  through it) and a tiny exported reference teacher; the feature classifier trains 5 steps."""
  monkeypatch.setattr(image_metrics, 'CLASSIFIER_STEPS', 5)
  c = _config(method)
  c.net.kwargs.update(TINY_UNET)
  c.method.reference = export_tiny_unet(tmp_path / 'reference')
  shorten_image_run(c)
  assert_finite_image_metrics(run(c, str(tmp_path / 'run'), progress=False))
