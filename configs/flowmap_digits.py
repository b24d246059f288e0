"""Few-step flow maps trained from scratch, without a teacher, on scikit-learn's bundled 8x8 digits.

python experiments/main.py --config=configs/flowmap_digits.py:meanflow --workdir=runs/meanflow_digits
Variants: meanflow (arXiv 2505.13447), shortcut (arXiv 2410.12557). The student is a fresh SongUNet
of the digits teacher's size and schedule (configs/teacher_digits.py); it is evaluated at 1, 2, 4
and 8 steps (student/<metric>@<steps>, FID/KID on the digits classifier's features) beside the
bundled teacher at 35 NFE (teacher/<metric>@35; --config.method.reference=None skips it).
"""
import ml_collections

from onestep_jax.experiment.defaults import image_teacher_config
from onestep_jax.methods.flow_map_config import flow_map_training_fields


def get_config(arg: str = 'meanflow'):
  c = image_teacher_config('digits', '')
  c.method = ml_collections.ConfigDict()
  flow_map_training_fields(c.method, arg)  # unknown methods list the valid ones
  c.method.sigma_data = 0.5  # EDM's value for images in [-1, 1]
  c.method.reference = 'bundled:digits'
  return c
