"""Train a masked diffusion language model (MDLM) on a known Markov chain, so that the NLL of its
samples is exact; a few minutes on 2 CPU cores.

python experiments/main.py --config=configs/mdlm_markov.py --workdir=runs/mdlm_markov
metrics.json: teacher/sample_nll@<steps>, teacher/entropy@<steps> for steps 256 ... 8,
teacher/nelbo, and the source's floors data/sample_nll_exact, data/*_floor.
"""
from onestep_jax.experiment.discrete_defaults import mdlm_method_fields, token_model_config


def get_config(arg: str = ''):
  del arg  # no variants
  c = token_model_config(vocab_size=8, length=32)
  m = c.method
  m.name = 'mdlm'
  mdlm_method_fields(m)
  m.lr = 1e-3  # constant learning rate after warm-up (MDLM: 3e-4 at batch 512)
  m.ema_halflife_nimg = 50_000.0  # EMA half-life in training sequences

  c.train.batch_size = 128
  c.train.num_steps = 1500
  c.train.log_every = 100
  c.train.save_every = 500
  c.eval.num_samples = 500  # samples per step count
  c.eval.batch_size = 500
  return c
