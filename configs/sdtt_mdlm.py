"""Distil an imported MDLM (or SDTT) checkpoint with SDTT (Deschenaux & Gulcehre 2024, arXiv
2410.21035), from files the user provides; nothing is downloaded. The student starts as the
checkpoint; each round halves its sampling steps, from base_steps down to min_steps.

python experiments/main.py --config=configs/sdtt_mdlm.py --workdir=runs/sdtt_owt \
    --config.method.teacher_file=mdlm-owt/model.safetensors \
    --config.data.kwargs.tokenizer=gpt2/tokenizer.json \
    --config.data.name=text_file:owt_sample.txt

The three flags are required. The checkpoint is a .safetensors (with config.json beside it, as
published) or .npz file read by onestep_jax.convert.mdlm; the tokenizer is the Hugging Face
tokenizer.json it was trained with (GPT-2's for MDLM's OpenWebText model: 50257 tokens, and the
checkpoint's 50258 ids add the mask). Data: 'text_file:<path>' (a UTF-8 text file) or
'tfds_text:<name>' (a prepared TFDS text set), tokenized with that tokenizer; every fifth window
is held out for the NELBO. Defaults follow SDTT's distillation of MDLM-OWT (batch 128, 10k steps
per round, 1024 -> 8 steps: 7 rounds); on a CPU, shrink length, batch and steps.
Outputs as for the small models: metrics.json (teacher/* and student/* entropy and tokens_per_s
at each of method.sample_steps, their nelbo per token), samples_<model>_nfe<steps>.txt (decoded
samples) and export/ (the student, for onestep_jax.convert.mdlm.save or a further run).
"""
import math

from ml_collections import config_dict

from onestep_jax.experiment.defaults import base_config
from onestep_jax.experiment.discrete_defaults import dit_section, sdtt_method_fields

SDTT_EMA_DECAY = 0.9999  # SDTT's EMA decay per step at batch 128


def get_config(arg: str = ''):
  del arg  # no variants
  c = base_config()
  c.data.name = config_dict.placeholder(str)  # required: 'text_file:<path>' or 'tfds_text:<name>'
  d = c.data.kwargs
  d.tokenizer = config_dict.placeholder(str)  # required: the checkpoint's tokenizer.json
  d.length = 1024  # tokens per sequence (MDLM-OWT: 1024; the rotary DiT takes any length)
  c.eval.ar_evaluator = ''  # an 'ar' run (workdir or export) scoring samples: gen_ppl; '' = off
  dit_section(c)  # replaced at start-up by the checkpoint's network

  m = c.method
  m.teacher_file = config_dict.placeholder(str)  # required: MDLM checkpoint .safetensors / .npz
  m.teacher = 'mdlm:' + m.get_ref('teacher_file')  # 'mdlm:<teacher_file>', kept in step
  sdtt_method_fields(m, base_steps=1024, round_steps=10_000)  # the checkpoint's settings follow
  m.sample_steps = (1024, 256, 64, 16, 8)  # ancestral steps at which samples are evaluated
  m.lr_warmup_steps = 2500  # linear warm-up (SDTT: 2500)
  batch = 128  # SDTT's global batch
  # EMA half-life in training sequences: SDTT's decay per step at its batch.
  m.ema_halflife_nimg = round(batch * math.log(0.5) / math.log(SDTT_EMA_DECAY))

  c.train.batch_size = batch
  c.train.num_steps = 7 * 10_000  # rounds (1024 -> 8: 7) x round_steps; more lengthen the last
  c.train.log_every = 100
  c.train.save_every = 1000
  c.eval.num_samples = 256  # samples per model and step count (at most half the held-out set)
  c.eval.batch_size = 32
  return c
