"""A tiny three-group problem for the trainer tests: frozen teacher, MLP generator, linear
critic; the generator's phase hands its samples to a second critic update. Shared by in-process
tests and the subprocess scripts."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from onestep_jax.train import spec
from onestep_jax.train.trainer import Trainer

DIM, HIDDEN, BATCH = 4, 16, 16


def init_params(seed: int = 0) -> dict:
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  normal = lambda key, shape: 0.5 * jax.random.normal(key, shape, jnp.float32)
  return {
      'teacher': {'w': normal(k[0], (DIM, DIM))},
      'generator': {'w1': normal(k[1], (DIM, HIDDEN)), 'b1': jnp.zeros(HIDDEN),
                    'w2': normal(k[2], (HIDDEN, DIM)), 'b2': jnp.zeros(DIM)},
      'critic': {'w': normal(k[3], (DIM, DIM)), 'b': jnp.zeros(DIM)},
  }


def generate(p, z):
  return jnp.tanh(z @ p['w1'] + p['b1']) @ p['w2'] + p['b2']


def critic_loss(params, batch, key):
  """Critic regresses the teacher's map of noisy generator samples."""
  x = generate(params['generator'], batch['z'])
  x = x + 0.1 * jax.random.normal(key, x.shape)
  pred = x @ params['critic']['w'] + params['critic']['b']
  loss = jnp.mean((pred - x @ params['teacher']['w']) ** 2)
  return loss, {'pred_norm': jnp.mean(pred ** 2)}


def generator_loss(params, batch, key):
  """Generator matches the data through the teacher, with the critic as a regulariser; hands
  over its samples (split like the batch) and a key (replicated)."""
  k_z, k_handed = jax.random.split(key)
  x = generate(params['generator'], batch['z'] + 0.1 * jax.random.normal(k_z, batch['z'].shape))
  fit = jnp.mean((x @ params['teacher']['w'] - batch['x']) ** 2)
  reg = jnp.mean((x @ params['critic']['w'] + params['critic']['b']) ** 2)
  return fit + 0.1 * reg, {'fit': fit}, {'x': x, 'key': k_handed}


def critic_on_samples_loss(params, batch, key, handed):
  """critic_loss on the samples and key the generator's phase handed over."""
  del batch, key
  x = handed['x'] + 0.1 * jax.random.normal(handed['key'], handed['x'].shape)
  pred = x @ params['critic']['w'] + params['critic']['b']
  return jnp.mean((pred - x @ params['teacher']['w']) ** 2), {}


def get_batch(step, process_index, process_count):
  """Deterministic global batch number `step`; returns this process's rows."""
  rng = np.random.default_rng(step)
  batch = {'z': rng.standard_normal((BATCH, DIM), np.float32),
           'x': rng.standard_normal((BATCH, DIM), np.float32)}
  rows = BATCH // process_count
  return {k: v[process_index * rows:(process_index + 1) * rows] for k, v in batch.items()}


def make_trainer(*, mesh=None, nonfinite='skip', critic_repeats=3, switch_at=2,
                 fsdp_min_size=2**14, packed_update=True, executable_cache=None) -> Trainer:
  groups = [
      spec.Group('teacher', trainable=False),
      spec.Group('generator', trainable=True, optimizer=optax.adam(1e-2),
                 ema_halflife_nimg=64, ema_rampup_ratio=0.5, clip_norm=1.0),
      spec.Group('critic', trainable=True, optimizer=optax.adam(1e-2)),
  ]
  phases = [spec.Phase('critic', critic_loss, updates=('critic',)),
            spec.Phase('generator', generator_loss, updates=('generator',), gives=True),
            spec.Phase('critic_on_samples', critic_on_samples_loss, updates=('critic',),
                       takes='generator')]
  stages = [spec.Stage([('critic', 1)], until_step=switch_at),
            spec.Stage([('critic', critic_repeats), ('generator', 1), ('critic_on_samples', 1)])]
  return Trainer(groups=groups, phases=phases, stages=stages, batch_size=BATCH, mesh=mesh,
                 nonfinite=nonfinite, fsdp_min_size=fsdp_min_size, packed_update=packed_update,
                 executable_cache=executable_cache)


def per_leaf_items(state, trainer: Trainer) -> dict:
  """Checkpointed items with the optimizer states per leaf, whatever the mesh packed."""
  return {**state.checkpoint_items(), 'opt_state': trainer.per_leaf_opt_state(state)}


def flat_state(state, trainer: Optional[Trainer] = None) -> dict:
  """Checkpointed leaves of a state as numpy, keyed by path (for comparisons); with `trainer`,
  its optimizer states per leaf (`per_leaf_items`)."""
  items = state.checkpoint_items() if trainer is None else per_leaf_items(state, trainer)
  leaves = jax.tree_util.tree_flatten_with_path(items)[0]
  return {jax.tree_util.keystr(p): np.asarray(jax.device_get(x)) for p, x in leaves}
