"""Distil a masked diffusion LM trained on the Markov source (configs/mdlm_markov.py) with SDTT:
rounds halve the sampling steps from base_steps down to min_steps.

One command trains the teacher (configs/mdlm_markov.py, in <workdir>/teacher) and then every
round; rerunning it resumes whichever stage was interrupted:
python experiments/main.py --config=configs/sdtt_markov.py --workdir=runs/sdtt_markov
Or distil an existing teacher, given as the variant: an mdlm run's workdir or export directory,
or mdlm:<checkpoint.npz|.safetensors>:
python experiments/main.py --config=configs/sdtt_markov.py:runs/mdlm_markov --workdir=runs/sdtt
metrics.json: teacher/* and student/* sample_nll, entropy at every step count of
method.sample_steps, and their nelbo. In the one-command form the teacher's settings are
--config.teacher_run.<field>=... (its data should match --config.data.*).
"""
import os

from onestep_jax.experiment.discrete_defaults import (sdtt_method_fields, sdtt_teacher,
                                                      token_model_config)

TEACHER_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mdlm_markov.py')


def get_config(arg: str = ''):
  c = token_model_config(vocab_size=8, length=32)  # the network comes from the teacher
  m = c.method
  sdtt_teacher(c, arg, teacher_config=TEACHER_CONFIG, teacher_steps=256)
  sdtt_method_fields(m, base_steps=256, round_steps=300)
  m.ema_halflife_nimg = 10_000.0  # EMA half-life of the student in training sequences

  c.train.batch_size = 128
  c.train.num_steps = 5 * 300  # rounds (256 -> 8: 5) x round_steps; more lengthen the last round
  c.train.log_every = 100
  c.train.save_every = 300
  c.eval.num_samples = 500  # samples per model and step count
  c.eval.batch_size = 500
  return c
