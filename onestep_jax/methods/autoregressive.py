"""The autoregressive baseline of masked diffusion LMs ('ar'): a causal transformer trained by
maximum likelihood on the same token data, sampled with a KV cache, and exported as the
evaluator of generative perplexity (discrete/autoregressive.py).

Its generator 'ar' makes one network call per token, so its metrics are named
`ar/<metric>@<length>` (the NFE of a sample, like the sampling steps of the diffusion models);
`ar/nelbo` is its exact NLL per token on held-out data (an AR model's likelihood is exact, so
its "bound" is tight and compares directly with the diffusion models' NELBO).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from onestep_jax.discrete import autoregressive as ar
from onestep_jax.methods.base import Generator
from onestep_jax.methods.mdlm import DiscreteSetup, make_optimizer
from onestep_jax.nets.causal_transformer import CausalTransformer, init_cache
from onestep_jax.train.spec import Group, Phase, Stage

NETWORK = 'causal_transformer'
METHOD = 'ar'
MODEL = 'ar'  # metrics.json names: ar/<metric>@<length>


def check_token_data(config: ml_collections.ConfigDict, dataset) -> None:
  """The AR baseline needs token data and the causal transformer; raises ValueError."""
  if not hasattr(dataset, 'vocab_size'):
    raise ValueError(f'method {METHOD!r} models token sequences; dataset {dataset.name!r} is '
                     'not a token source')
  if config.net.name != NETWORK:
    raise ValueError(f'method {METHOD!r} needs net.name={NETWORK!r}, got {config.net.name!r}')


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """The network's vocabulary is the data's plus the start token, which gets the last id."""
  check_token_data(config, dataset)
  config.net.kwargs.vocab_size = int(dataset.vocab_size) + 1
  config.method.bos_index = int(dataset.vocab_size)
  return config


def apply_fn(module: CausalTransformer):
  """(params, inputs [B, T]) -> logits [B, T, V] of the full causal forward."""
  return lambda params, tokens: module.apply({'params': params}, tokens)


def sampler(module: CausalTransformer, *, group: str, length: int, bos_index: int):
  """sample_fn(params, key, num, labels) drawing with the KV cache."""

  def sample_fn(params, key, num, labels):
    del labels  # unconditional
    step = lambda x, cache, i: module.apply({'params': params[group]}, x, cache=cache, index=i)
    return ar.sample(step, init_cache(module, num, length), key, num=num, length=length,
                     bos_index=bos_index)

  return sample_fn


def build(config: ml_collections.ConfigDict, dataset) -> DiscreteSetup:
  """The 'ar' method: one trainable group 'model' (with EMA), one phase."""
  check_token_data(config, dataset)
  m = config.method
  module = CausalTransformer(**config.net.kwargs)
  length = int(dataset.example_shape[0])

  def loss_fn(params, batch, key):
    logits_fn = lambda x: module.apply({'params': params['model']}, x, train=True,
                                       rngs={'dropout': key})
    loss = jnp.mean(ar.next_token_loss(logits_fn=logits_fn, tokens=batch['x'],
                                       bos_index=m.bos_index))
    return loss, {'loss': loss}

  def nll_fn(params, tokens, key):
    del key  # exact
    return -ar.sequence_log_likelihood(functools.partial(apply_fn(module), params['model']),
                                       tokens, bos_index=m.bos_index)

  init = jax.jit(lambda k: module.init(k, jnp.zeros((1, length), jnp.int32))['params'])
  return DiscreteSetup(
      groups=(Group('model', trainable=True, optimizer=make_optimizer(m, m.lr),
                    ema_halflife_nimg=m.ema_halflife_nimg, clip_norm=m.clip_norm),),
      phases=(Phase('next_token', loss_fn, ('model',)),),
      stages=(Stage((('next_token', 1),)),),
      init_params=lambda key: {'model': init(key)},
      generators=(Generator(MODEL, length, sampler(module, group='model', length=length,
                                                   bos_index=m.bos_index)),),
      export_group='model',
      export_kwargs={'network': NETWORK, 'network_kwargs': config.net.kwargs.to_dict(),
                     'method': METHOD, 'bos_index': m.bos_index, 'length': length},
      nelbo_fns={MODEL: nll_fn},
  )


@functools.lru_cache(maxsize=2)
def load_evaluator(path: str) -> ar.Evaluator:
  """The evaluator exported by an 'ar' run: its workdir or export directory."""
  from onestep_jax.export_format import export_directory, load_exported
  exported = export_directory(path)
  if exported is None:
    raise FileNotFoundError(f'AR evaluator {path!r} is neither the workdir of an {METHOD!r} run '
                            'nor its export directory')
  params, network_kwargs, meta = load_exported(exported)
  if meta.get('network') != NETWORK or meta.get('method') != METHOD:
    raise ValueError(f'export {path!r} holds a {meta.get("method")!r} run of network '
                     f'{meta.get("network")!r}; an evaluator is an {METHOD!r} run')
  module = CausalTransformer(**network_kwargs)
  return ar.Evaluator(apply_fn=apply_fn(module), params=params,
                      bos_index=int(meta['bos_index']), length=int(meta['length']))
