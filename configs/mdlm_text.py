"""Train a masked diffusion language model (MDLM) on the Python reference manual, character by
character (data 'pydoc_text': the standard library's pydoc_data.topics, no download; every fifth
128-character window is held out).

python experiments/main.py --config=configs/mdlm_text.py --workdir=runs/mdlm_text
metrics.json: teacher/entropy@<steps> (unigram entropy of the samples, nats) for steps
128 ... 8, teacher/nelbo (nats per character on the held-out windows), and the held-out data's
data/entropy_floor.
"""
from onestep_jax.experiment.discrete_defaults import mdlm_method_fields, text_model_config


def get_config(arg: str = ''):
  del arg  # no variants
  c = text_model_config(length=128)
  m = c.method
  m.name = 'mdlm'
  mdlm_method_fields(m)
  m.sample_steps = (128, 64, 32, 16, 8)  # ancestral steps at which samples are evaluated
  m.lr = 1e-3  # constant learning rate after warm-up (MDLM: 3e-4 at batch 512)
  m.ema_halflife_nimg = 50_000.0  # EMA half-life in training sequences

  c.train.batch_size = 64
  c.train.num_steps = 5000
  c.train.log_every = 100
  c.train.save_every = 500
  c.eval.num_samples = 256  # samples per step count (at most half the 726 held-out windows)
  c.eval.batch_size = 128
  return c
