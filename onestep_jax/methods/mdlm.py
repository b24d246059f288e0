"""Teacher training for masked diffusion language models: MDLM (Sahoo et al. 2024, arXiv
2406.07524): the continuous-time NELBO (Eq. 10-11) of a SUBS-parameterised DiT, evaluated by
ancestral sampling at several step counts and by its NELBO on held-out sequences."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from onestep_jax.discrete.losses import nelbo_loss
from onestep_jax.discrete.process import mask_tokens, subs_log_probs
from onestep_jax.discrete.sampling import ancestral_sample
from onestep_jax.discrete.schedule import LogLinearSchedule, sample_time
from onestep_jax.methods.base import Generator, MethodSetup
from onestep_jax.methods.optimizer import adam
from onestep_jax.nets.dit import DiT
from onestep_jax.train.spec import Group, Phase, Stage

NETWORK = 'dit'  # the only network of token models
# nelbo_fn(params, tokens [B, L], key) -> NELBO per sequence [B] in nats; `params` as sample_fn's.
NelboFn = Callable[[Mapping[str, Any], jnp.ndarray, jax.Array], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class DiscreteSetup(MethodSetup):
  """The MethodSetup of a token model; its generators' `nfe` is the number of sampling steps.

  Adds the NELBO of each model on held-out sequences, for the final evaluation.
  """
  nelbo_fns: Mapping[str, NelboFn] = dataclasses.field(default_factory=dict)


def check_token_data(config: ml_collections.ConfigDict, dataset) -> None:
  """Token models need token data and the DiT; raises ValueError naming the problem."""
  if not hasattr(dataset, 'vocab_size'):
    raise ValueError(f'method {config.method.name!r} models token sequences; dataset '
                     f'{dataset.name!r} is not a token source (valid: markov, pydoc_text, '
                     'tfds_text:<name>)')
  if config.net.name != NETWORK:
    raise ValueError(f'method {config.method.name!r} needs net.name={NETWORK!r}, got '
                     f'{config.net.name!r}')


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """The DiT's vocabulary is the data's plus the mask token, which gets the last id."""
  check_token_data(config, dataset)
  config.net.kwargs.vocab_size = int(dataset.vocab_size) + 1
  config.method.mask_index = int(dataset.vocab_size)
  return config


def log_probs_fn(module: DiT, params: Any, *, mask_index: int, time_conditioning: bool,
                 train: bool = False, rng: Optional[jax.Array] = None) -> Callable:
  """SUBS log x_theta(z, sigma) [B, L, V] of a DiT; a time-independent network sees sigma = 0
  (MDLM's default, which makes sampling with a cache exact)."""
  rngs = {'dropout': rng} if train else None

  def fn(z, sigma):
    logits = module.apply({'params': params}, z, sigma if time_conditioning else None,
                          train=train, rngs=rngs)
    return subs_log_probs(logits, z, mask_index=mask_index)

  return fn


def init_dit(module: DiT, key: jax.Array, length: int) -> Any:
  """Fresh DiT parameters, initialised in one compiled call."""
  return jax.jit(lambda k: module.init(k, jnp.zeros((1, length), jnp.int32))['params'])(key)


def make_optimizer(m: ml_collections.ConfigDict, lr: float) -> optax.GradientTransformation:
  """AdamW with a linear warm-up to a constant learning rate (MDLM's `constant_warmup`)."""
  return adam(lr, m, rampup_steps=m.lr_warmup_steps, weight_decay=m.weight_decay)


def nelbo_per_sequence(fn: Callable, tokens: jnp.ndarray, key: jax.Array, *, mask_index: int,
                       schedule: LogLinearSchedule, t_min: float) -> jnp.ndarray:
  """One Monte Carlo draw of the NELBO [B] of `tokens` (antithetic t, random masks)."""
  k_t, k_z = jax.random.split(key)
  t = sample_time(k_t, tokens.shape[0], t_min=t_min)
  z_t = mask_tokens(k_z, tokens, t, mask_index=mask_index, schedule=schedule)
  return nelbo_loss(log_probs_fn=fn, x0=tokens, z_t=z_t, t=t, mask_index=mask_index,
                    schedule=schedule)


def sampler(module: DiT, m: ml_collections.ConfigDict, *, group: str, length: int,
            num_steps: int) -> Callable:
  """sample_fn(params, key, num, labels) of the group's network with `num_steps` steps."""
  schedule = LogLinearSchedule(m.schedule_eps)

  def sample_fn(params, key, num, labels):
    del labels  # unconditional
    fn = log_probs_fn(module, params[group], mask_index=m.mask_index,
                      time_conditioning=m.time_conditioning)
    return ancestral_sample(fn, key, num=num, length=length, num_steps=num_steps,
                            mask_index=m.mask_index, schedule=schedule,
                            cache=m.cache and not m.time_conditioning)[0]

  return sample_fn


def export_kwargs(config: ml_collections.ConfigDict, length: int) -> dict[str, Any]:
  """What rebuilds a token model from its export: network, kwargs and diffusion settings."""
  m = config.method
  return {'network': NETWORK, 'network_kwargs': config.net.kwargs.to_dict(),
          'method': m.name, 'mask_index': m.mask_index, 'length': length,
          'time_conditioning': m.time_conditioning, 'schedule_eps': m.schedule_eps}


def build(config: ml_collections.ConfigDict, dataset) -> DiscreteSetup:
  """The 'mdlm' method: one trainable group 'denoiser' (with EMA), one phase."""
  check_token_data(config, dataset)
  m = config.method
  module = DiT(**config.net.kwargs)
  length = int(dataset.example_shape[0])
  schedule = LogLinearSchedule(m.schedule_eps)

  def loss_fn(params, batch, key):
    k_drop, k_loss = jax.random.split(key)
    fn = log_probs_fn(module, params['denoiser'], mask_index=m.mask_index,
                      time_conditioning=m.time_conditioning, train=True, rng=k_drop)
    per_token = nelbo_per_sequence(fn, batch['x'], k_loss, mask_index=m.mask_index,
                                   schedule=schedule, t_min=m.t_min) / length
    loss = jnp.mean(per_token)
    return loss, {'loss': loss}

  def nelbo_fn(params, tokens, key):
    fn = log_probs_fn(module, params['denoiser'], mask_index=m.mask_index,
                      time_conditioning=m.time_conditioning)
    return nelbo_per_sequence(fn, tokens, key, mask_index=m.mask_index, schedule=schedule,
                              t_min=m.t_min)

  group = Group('denoiser', trainable=True, optimizer=make_optimizer(m, m.lr),
                ema_halflife_nimg=m.ema_halflife_nimg, clip_norm=m.clip_norm)
  return DiscreteSetup(
      groups=(group,),
      phases=(Phase('denoise', loss_fn, ('denoiser',)),),
      stages=(Stage((('denoise', 1),)),),
      init_params=lambda key: {'denoiser': init_dit(module, key, length)},
      generators=tuple(
          Generator('teacher', int(n), sampler(module, m, group='denoiser', length=length,
                                              num_steps=int(n)))
          for n in m.sample_steps),
      export_group='denoiser',
      export_kwargs=export_kwargs(config, length),
      nelbo_fns={'teacher': nelbo_fn},
  )
