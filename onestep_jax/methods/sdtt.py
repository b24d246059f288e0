"""SDTT, Self-Distillation Through Time (Deschenaux & Gulcehre 2024, arXiv 2410.21035): a masked
diffusion LM distilled, round after round, into one that samples with half as many steps.

Round r distils a teacher that samples with N_r = base_steps / 2^r steps: the student matches in
one step of size 2 dt_r the teacher's two steps of size dt_r = (1 - T_MIN) / N_r (losses/sdtt.py).
The round's teacher is a parameter group {'network', 'dt'}; at the end of a round a one-step
'promote' phase sets it to (student, 2 dt), so one compiled 'distill' phase serves every round and
the round's state is checkpointed like any parameters. The last round's student samples with
base_steps / 2^rounds >= min_steps steps. The student starts as the teacher:
an 'mdlm' run of this library (its workdir or export directory) or an imported MDLM / SDTT
checkpoint, 'mdlm:<file.npz|file.safetensors>' (onestep_jax.convert.mdlm).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from onestep_jax.discrete.process import mask_tokens
from onestep_jax.discrete.sampling import T_MIN
from onestep_jax.discrete.schedule import LogLinearSchedule, sample_time
from onestep_jax.losses.sdtt import check_divergence, sdtt_loss
from onestep_jax.methods.base import Generator
from onestep_jax.methods.mdlm import (NETWORK, DiscreteSetup, check_token_data, export_kwargs,
                                      log_probs_fn, make_optimizer, nelbo_per_sequence, sampler)
from onestep_jax.nets.dit import DiT
from onestep_jax.train.spec import Group, Phase, Stage

MDLM_PREFIX = 'mdlm:'  # 'mdlm:<file>': an MDLM / SDTT checkpoint (onestep_jax.convert.mdlm)
TOKEN_TEACHER_METHODS = ('mdlm', 'sdtt')  # exports that can be distilled


@dataclasses.dataclass(frozen=True)
class TokenTeacher:
  """A masked-diffusion DiT to distil, with the settings it was trained with."""
  network_kwargs: dict[str, Any]
  params: Any
  mask_index: int
  time_conditioning: bool
  schedule_eps: float
  identity: str  # content hash; a resume with another teacher is refused


def _identity(params) -> str:
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return f'{NETWORK}:{h.hexdigest()[:16]}'


@functools.lru_cache(maxsize=2)
def load_token_teacher(spec: str) -> TokenTeacher:
  """'mdlm:<checkpoint>', or the workdir or export directory of an 'mdlm' / 'sdtt' run."""
  if spec.startswith(MDLM_PREFIX):
    from onestep_jax.convert import mdlm as convert_mdlm
    model = convert_mdlm.load(spec[len(MDLM_PREFIX):])
    # Public MDLM / SDTT checkpoints are time-independent networks of the default schedule.
    return TokenTeacher(network_kwargs=model.network_kwargs, params=model.params,
                        mask_index=model.mask_index, time_conditioning=False,
                        schedule_eps=LogLinearSchedule().eps, identity=_identity(model.params))
  from onestep_jax.export_format import export_directory, load_exported
  exported = export_directory(spec)
  if exported is None:
    raise FileNotFoundError(f'SDTT teacher {spec!r} is neither "mdlm:<checkpoint file>", the '
                            'workdir of an mdlm run nor its export directory')
  params, network_kwargs, meta = load_exported(exported)
  if meta.get('network') != NETWORK or meta.get('method') not in TOKEN_TEACHER_METHODS:
    raise ValueError(f'export {spec!r} holds a {meta.get("method")!r} run of network '
                     f'{meta.get("network")!r}; SDTT distils {list(TOKEN_TEACHER_METHODS)} runs '
                     f'of the {NETWORK!r} network')
  return TokenTeacher(network_kwargs=dict(network_kwargs), params=params,
                      mask_index=int(meta['mask_index']),
                      time_conditioning=bool(meta['time_conditioning']),
                      schedule_eps=float(meta['schedule_eps']), identity=_identity(params))


def round_teacher_steps(m: ml_collections.ConfigDict) -> list[int]:
  """Sampling steps of each round's teacher: base_steps, base_steps / 2, ..., while the student
  (half as many) keeps at least min_steps."""
  base, low = int(m.base_steps), int(m.min_steps)
  if base < 2 * low or base & (base - 1) or low < 1:
    raise ValueError(f'SDTT needs base_steps a power of two >= 2 * min_steps >= 2, got '
                     f'base_steps={base}, min_steps={low}')
  steps = []
  while base // 2 >= low:
    steps.append(base)
    base //= 2
  return steps


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """The student's network and diffusion settings are the teacher's; its vocabulary must be the
  data's plus the mask token."""
  check_token_data(config, dataset)
  if not config.method.get('teacher'):  # configs/sdtt_mdlm.py derives it from teacher_file
    flag = ('teacher_file=<checkpoint .npz|.safetensors>' if 'teacher_file' in config.method
            else 'teacher=<mdlm run | mdlm:<checkpoint>>')
    raise ValueError(f'SDTT needs a teacher: pass --config.method.{flag}')
  teacher = load_token_teacher(config.method.teacher)
  vocab = int(teacher.network_kwargs['vocab_size'])
  if vocab != int(dataset.vocab_size) + 1:
    tokenizer = getattr(dataset, 'tokenizer', None)
    hint = '' if tokenizer is None else (
        f' from its tokenizer {tokenizer!r}; give the tokenizer file the teacher was trained '
        'with: --config.data.kwargs.tokenizer=<tokenizer.json>')
    raise ValueError(f'the teacher has {vocab} token ids (mask included) but dataset '
                     f'{dataset.name!r} has {dataset.vocab_size} tokens (+1 for the mask){hint}')
  config.net.kwargs = ml_collections.ConfigDict(teacher.network_kwargs)
  m = config.method
  m.mask_index = teacher.mask_index
  m.time_conditioning = teacher.time_conditioning
  m.schedule_eps = teacher.schedule_eps
  return config


def build(config: ml_collections.ConfigDict, dataset) -> DiscreteSetup:
  """Groups 'student' (trained, EMA), 'teacher' (the current round's network and step size,
  set by 'promote') and 'original' (frozen); phases 'distill' and 'promote'; stages per round."""
  check_token_data(config, dataset)
  m = config.method
  check_divergence(m.divergence)
  teacher = load_token_teacher(m.teacher)
  module = DiT(**config.net.kwargs)
  length = int(dataset.example_shape[0])
  schedule = LogLinearSchedule(m.schedule_eps)
  rounds = round_teacher_steps(m)
  if m.round_steps < 2:
    raise ValueError(f'SDTT needs round_steps >= 2, got {m.round_steps}')

  def network(params, **kw):
    return log_probs_fn(module, params, mask_index=m.mask_index,
                        time_conditioning=m.time_conditioning, **kw)

  def distill_loss(params, batch, key):
    k_t, k_z, k_teacher, k_drop = jax.random.split(key, 4)
    x0 = batch['x']
    t = sample_time(k_t, x0.shape[0], t_min=m.t_min)
    z_t = mask_tokens(k_z, x0, t, mask_index=m.mask_index, schedule=schedule)
    per_sequence = sdtt_loss(
        student_log_probs_fn=network(params['student'], train=True, rng=k_drop),
        teacher_log_probs_fn=network(params['teacher']['network']), z_t=z_t, t=t,
        dt=params['teacher']['dt'], key=k_teacher, mask_index=m.mask_index, schedule=schedule,
        divergence=m.divergence, num_teacher_steps=m.num_teacher_steps)
    loss = jnp.sum(per_sequence) / jnp.maximum(jnp.sum(z_t == m.mask_index), 1)
    return loss, {'loss': loss}

  def promote_loss(params, batch, key):
    """0.5 ||network - sg(student)||^2 - 0.5 dt^2, whose gradient (network - student, -dt) makes
    one SGD step of rate 1 set the teacher to (student, 2 dt)."""
    del batch, key
    teacher = params['teacher']
    sq = jax.tree.map(lambda a, b: jnp.sum((a - b)**2), teacher['network'], params['student'])
    loss = 0.5 * sum(jax.tree.leaves(sq)) - 0.5 * teacher['dt']**2
    return loss, {'loss': loss}

  stages = []
  for r in range(len(rounds)):
    if r:
      stages.append(Stage((('promote', 1), ('distill', 1)), until_step=r * m.round_steps + 1))
    stages.append(Stage((('distill', 1),),
                        until_step=None if r == len(rounds) - 1 else (r + 1) * m.round_steps))

  def nelbo_fn(group):
    def fn(params, tokens, key):
      return nelbo_per_sequence(network(params[group]), tokens, key, mask_index=m.mask_index,
                                schedule=schedule, t_min=m.t_min)
    return fn

  def init_params(key):
    del key  # every network starts as the teacher (separate copies: the trainer donates buffers)
    copy = lambda: jax.tree.map(jnp.array, teacher.params)
    return {'student': copy(), 'original': copy(),
            'teacher': {'network': copy(), 'dt': jnp.float32((1.0 - T_MIN) / rounds[0])}}

  generators = tuple(
      Generator(model, int(n), sampler(module, m, group=group, length=length, num_steps=int(n)))
      for model, group in (('teacher', 'original'), ('student', 'student'))
      for n in m.sample_steps)
  return DiscreteSetup(
      groups=(Group('student', trainable=True, optimizer=make_optimizer(m, m.lr),
                    ema_halflife_nimg=m.ema_halflife_nimg, clip_norm=m.clip_norm),
              Group('teacher', trainable=True, optimizer=optax.sgd(1.0)),
              Group('original', trainable=False)),
      phases=(Phase('distill', distill_loss, ('student',)),
              Phase('promote', promote_loss, ('teacher',))),
      stages=tuple(stages),
      init_params=init_params,
      generators=generators,
      export_group='student',
      export_kwargs={**export_kwargs(config, length), 'sample_steps': rounds[-1] // 2},
      teacher_identity=teacher.identity,
      nelbo_fns={'teacher': nelbo_fn('original'), 'student': nelbo_fn('student')},
  )
