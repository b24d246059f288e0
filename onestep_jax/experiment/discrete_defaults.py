"""Config sections of token models (masked diffusion and its distillation); configs/mdlm_*.py and
configs/sdtt_*.py fill in the rest."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from onestep_jax.experiment.defaults import base_config


def token_model_config(*, vocab_size: int, length: int) -> ml_collections.ConfigDict:
  """base_config with the Markov token source and a small DiT."""
  c = base_config()
  c.data.name = 'markov'
  d = c.data.kwargs
  d.vocab_size = vocab_size  # tokens of the source (the mask token is added on top)
  d.length = length  # tokens per sequence
  d.concentration = 0.3  # Dirichlet concentration of the chain's rows (small: peaked)
  d.chain_seed = 0  # which chain
  c.eval.ar_evaluator = ''  # an 'ar' run (workdir or export) scoring samples: gen_ppl; '' = off
  dit_section(c)
  return c


def dit_section(c: ml_collections.ConfigDict) -> None:
  """A small masked-diffusion DiT (MDLM's backbone) as the network of `c`."""
  c.net.name = 'dit'
  k = c.net.kwargs
  k.vocab_size = config_dict.placeholder(int)  # set at start-up: data vocabulary + mask token
  k.hidden_size = 64  # model width (MDLM small: 768)
  k.cond_dim = 32  # width of the noise conditioning (MDLM small: 128)
  k.n_heads = 4  # attention heads
  k.n_blocks = 2  # transformer blocks (MDLM small: 12)
  k.mlp_ratio = 4  # MLP width / model width
  k.dropout = 0.0  # dropout in training (MDLM: 0.1)


def text_model_config(*, length: int) -> ml_collections.ConfigDict:
  """base_config with the pydoc character corpus (data/text.py) and a larger DiT."""
  c = base_config()
  c.data.name = 'pydoc_text'
  d = c.data.kwargs
  d.length = length  # characters per sequence
  d.min_count = 1  # characters rarer than this in the corpus become the unknown token
  c.eval.ar_evaluator = ''  # an 'ar' run (workdir or export) scoring samples: gen_ppl; '' = off
  dit_section(c)
  c.net.kwargs.update(hidden_size=128, cond_dim=64, n_blocks=4)
  return c


def mdlm_method_fields(m: ml_collections.ConfigDict) -> None:
  """The masked-diffusion settings shared by teacher training (mdlm) and distillation."""
  m.mask_index = config_dict.placeholder(int)  # set at start-up: the last token id
  m.schedule_eps = 1e-3  # log-linear schedule: alpha_1 = eps
  m.t_min = 1e-3  # training times t ~ U[t_min, 1), antithetic (MDLM's sampling_eps)
  m.time_conditioning = False  # feed sigma(t) to the DiT (MDLM's default: no, sigma = 0)
  m.cache = True  # sampler skips the network after steps that change no token (needs False above)
  optimizer_fields(m)
  m.sample_steps = (256, 128, 64, 32, 16, 8)  # ancestral steps at which samples are evaluated


def sdtt_method_fields(m: ml_collections.ConfigDict, *, base_steps: int, round_steps: int) -> None:
  """SDTT's fields (arXiv 2410.21035) on top of mdlm_method_fields: rounds halve the sampling
  steps from `base_steps` (SDTT: 1024) down to 8, `round_steps` (SDTT: 10k) training steps each."""
  m.name = 'sdtt'
  mdlm_method_fields(m)  # schedule and conditioning are then taken from the teacher
  m.divergence = 'kl_reverse'  # 'kl_reverse' (SDTT default), 'kl_forward', 'mse' or 'tv'
  m.num_teacher_steps = 2  # teacher steps matched by one student step
  m.base_steps = base_steps  # sampling steps of the first round's teacher
  m.min_steps = 8  # the last round's student samples with at least this many steps
  m.round_steps = round_steps  # training steps per round
  m.lr = 3e-4  # constant learning rate after warm-up (SDTT: 3e-4)


def optimizer_fields(m: ml_collections.ConfigDict) -> None:
  """AdamW and gradient clipping of every token model (methods/mdlm.py: make_optimizer)."""
  m.beta1 = 0.9  # AdamW beta1
  m.beta2 = 0.999  # AdamW beta2
  m.eps = 1e-8  # AdamW epsilon
  m.weight_decay = 0.0  # AdamW weight decay (MDLM: 0)
  m.clip_norm = 1.0  # global gradient-norm clip
  m.lr_warmup_steps = 200  # linear warm-up to the constant learning rate


def ar_section(c: ml_collections.ConfigDict) -> None:
  """Turns a token-model config into the autoregressive baseline's: the causal transformer
  (nets/causal_transformer.py) of the DiT section's width, heads and depth, method 'ar'."""
  dit = c.net.kwargs
  c.net.name = 'causal_transformer'
  c.net.kwargs = ml_collections.ConfigDict()
  k = c.net.kwargs
  k.vocab_size = config_dict.placeholder(int)  # set at start-up: data vocabulary + start token
  k.hidden_size = dit.hidden_size  # model width
  k.n_heads = dit.n_heads  # attention heads
  k.n_blocks = dit.n_blocks  # transformer blocks
  k.mlp_ratio = dit.mlp_ratio  # MLP width / model width
  k.dropout = dit.dropout  # dropout in training
  m = c.method
  m.name = 'ar'
  m.bos_index = config_dict.placeholder(int)  # set at start-up: the start token's id (last id)
  optimizer_fields(m)


def sdtt_teacher(c: ml_collections.ConfigDict, teacher: str, *, teacher_config: str,
                 teacher_steps: int) -> None:
  """SDTT's teacher: `teacher` (an mdlm run's workdir or export, or mdlm:<checkpoint>), or, if
  empty, a `teacher_run` section holding the full config file `teacher_config`, which the runner
  trains first in <workdir>/teacher and then distils. That run reports its own samples at
  `teacher_steps` only: the SDTT run reports the teacher at every step count it evaluates."""
  from onestep_jax.experiment.overrides import load_config_file  # configs import this module
  c.method.teacher = teacher
  if not teacher:
    c.teacher_run = load_config_file(teacher_config)
    c.teacher_run.method.sample_steps = (teacher_steps,)
