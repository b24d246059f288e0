"""Train the autoregressive baseline on the pydoc character corpus of configs/mdlm_text.py: a
causal transformer of the DiT's width and depth, sampled with a KV cache; its export is the
generative perplexity evaluator of the masked diffusion runs on that corpus.

python experiments/main.py --config=configs/ar_text.py --workdir=runs/ar_text
python experiments/main.py --config=configs/mdlm_text.py --workdir=runs/mdlm_text \
    --config.eval.ar_evaluator=runs/ar_text
metrics.json: ar/entropy@128, ar/tokens_per_s@128 (@128: one network call per character of the
128-character samples), ar/nelbo (its exact NLL per character on the held-out windows) and the
held-out data's data/entropy_floor.
"""
from onestep_jax.experiment.discrete_defaults import ar_section, text_model_config


def get_config(arg: str = ''):
  del arg  # no variants
  c = text_model_config(length=128)  # the data and network size of configs/mdlm_text.py
  ar_section(c)
  m = c.method
  m.lr = 1e-3  # constant learning rate after warm-up
  m.ema_halflife_nimg = 50_000.0  # EMA half-life in training sequences

  c.train.batch_size = 64
  c.train.num_steps = 5000
  c.train.log_every = 100
  c.train.save_every = 500
  c.eval.num_samples = 256  # samples of the model (at most half the held-out windows)
  c.eval.batch_size = 128
  return c
