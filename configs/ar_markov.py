"""Train the autoregressive baseline on the Markov source of configs/mdlm_markov.py: a causal
transformer of the DiT's width and depth, sampled with a KV cache; its export is the generative
perplexity evaluator of the masked diffusion runs (--config.eval.ar_evaluator=<this workdir>).

python experiments/main.py --config=configs/ar_markov.py --workdir=runs/ar_markov
metrics.json: ar/sample_nll@32, ar/entropy@32, ar/tokens_per_s@32 (@32: one network call per
token of the 32-token samples), ar/nelbo (its exact NLL per token on held-out sequences) and the
source's floors data/sample_nll_exact, data/*_floor.
"""
from onestep_jax.experiment.discrete_defaults import ar_section, token_model_config


def get_config(arg: str = ''):
  del arg  # no variants
  c = token_model_config(vocab_size=8, length=32)  # the data of configs/mdlm_markov.py
  ar_section(c)
  m = c.method
  m.lr = 1e-3  # constant learning rate after warm-up
  m.ema_halflife_nimg = 50_000.0  # EMA half-life in training sequences

  c.train.batch_size = 128
  c.train.num_steps = 1500
  c.train.log_every = 100
  c.train.save_every = 500
  c.eval.num_samples = 500  # samples of the model
  c.eval.batch_size = 500
  return c
