"""Distil a masked diffusion LM trained on the pydoc character corpus (configs/mdlm_text.py)
with SDTT: rounds halve the sampling steps from base_steps down to min_steps.

One command trains the teacher (configs/mdlm_text.py, in <workdir>/teacher) and then every
round; rerunning it resumes whichever stage was interrupted:
python experiments/main.py --config=configs/sdtt_text.py --workdir=runs/sdtt_text
Or distil an existing teacher, given as the variant (an mdlm run's workdir or export directory):
python experiments/main.py --config=configs/sdtt_text.py:runs/mdlm_text --workdir=runs/sdtt_text
metrics.json: teacher/* and student/* entropy at every step count of method.sample_steps, and
their nelbo on the held-out windows.
"""
import os

from onestep_jax.experiment.discrete_defaults import (sdtt_method_fields, sdtt_teacher,
                                                      text_model_config)

TEACHER_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mdlm_text.py')


def get_config(arg: str = ''):
  c = text_model_config(length=128)  # the network comes from the teacher
  m = c.method
  sdtt_teacher(c, arg, teacher_config=TEACHER_CONFIG, teacher_steps=128)
  sdtt_method_fields(m, base_steps=128, round_steps=1000)
  m.sample_steps = (128, 64, 32, 16, 8)  # ancestral steps at which samples are evaluated
  m.ema_halflife_nimg = 10_000.0  # EMA half-life of the student in training sequences

  c.train.batch_size = 64
  c.train.num_steps = 4 * 1000  # rounds (128 -> 8: 4) x round_steps; more lengthen the last
  c.train.log_every = 100
  c.train.save_every = 500
  c.eval.num_samples = 256  # samples per model and step count (at most half the held-out set)
  c.eval.batch_size = 128
  return c
