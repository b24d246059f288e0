"""Self-Distillation Through Time (SDTT; Deschenaux & Gulcehre 2024, arXiv 2410.21035, Sec. 3,
Alg. 1; jdeschena/sdtt `core/distill/multi_round_sdtt.py`): a masked-diffusion student learns to
do in one ancestral step of size m * dt what its teacher does in m steps of size dt.

Targets: from z_t the teacher takes m ancestral steps t -> t - dt -> ... -> t - m dt. A token
unmasked at teacher step k gets the teacher's x0-prediction of that step as its target; a token
still masked after the m steps gets the last step's prediction. Restricted to the tokens the
teacher unmasked, the target is exact in expectation: the probability-weighted mean of the
targets of a token, given that it was unmasked, is the teacher's m-step marginal of that token
given that it is unmasked, which is what the student's one-step x_theta must equal for its step to
unmask the same tokens with the same probabilities (tests/test_sdtt.py checks this by
enumeration). The loss compares the student's SUBS prediction at (z_t, t) with the targets on every
position masked in z_t, with a divergence from `DIVERGENCES`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp

from onestep_jax.discrete.sampling import LogProbsFn, ancestral_step
from onestep_jax.discrete.schedule import LogLinearSchedule


def _real_tokens(log_p: jnp.ndarray, mask_index: int) -> jnp.ndarray:
  """log-probabilities without the mask column (SUBS puts no mass there)."""
  return jnp.delete(log_p, mask_index, axis=-1, assume_unique_indices=True)


def _kl(log_p, log_q):
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


class Divergence(NamedTuple):
  """d(student, target) per position from log-probabilities [..., V] -> [...]; zero exactly when
  the two distributions are equal."""
  fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
  description: str


DIVERGENCES: dict[str, Divergence] = {
    'kl_reverse': Divergence(lambda s, t: _kl(s, t),
                             "KL(student || teacher), SDTT's default ('kl-bwd')"),
    'kl_forward': Divergence(lambda s, t: _kl(t, s), "KL(teacher || student) ('kl-fwd')"),
    'mse': Divergence(lambda s, t: jnp.mean((s - t)**2, axis=-1),
                      "mean squared difference of log-probabilities ('mse')"),
    'tv': Divergence(lambda s, t: 0.5 * jnp.sum(jnp.abs(jnp.exp(s) - jnp.exp(t)), axis=-1),
                     'total variation 1/2 sum |p_student - p_teacher|'),
}


def check_divergence(name: str) -> Divergence:
  """The divergence called `name`; unknown names list the valid ones."""
  if name not in DIVERGENCES:
    raise ValueError(f'unknown SDTT divergence {name!r}; valid: {sorted(DIVERGENCES)}')
  return DIVERGENCES[name]


def assign_targets(z_t: jnp.ndarray, states: Sequence[jnp.ndarray],
                   log_probs: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """SDTT's target of every position [B, L, V] from a teacher trajectory.

  `states` are z_1..z_m after each teacher step and `log_probs` the teacher's predictions
  x_theta(z_0 = z_t), ..., x_theta(z_{m-1}) that produced them. A position unmasked by step k
  gets log_probs[k - 1]; every other position the last prediction.
  """
  if len(states) != len(log_probs) or not states:
    raise ValueError(f'need one prediction per teacher step, got {len(log_probs)} predictions '
                     f'for {len(states)} steps')
  target = log_probs[-1]
  previous = [z_t, *states[:-1]]
  for k in range(len(states) - 1):  # the unmasking steps of a position are disjoint events
    changed = states[k] != previous[k]
    target = jnp.where(changed[..., None], log_probs[k], target)
  return target


def sdtt_targets(*, teacher_log_probs_fn: LogProbsFn, z_t: jnp.ndarray, t: jnp.ndarray,
                 dt: float, key: jax.Array, mask_index: int, schedule: LogLinearSchedule,
                 num_teacher_steps: int = 2) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(targets [B, L, V], the teacher's final state z_{t - m dt}) of `num_teacher_steps`
  ancestral teacher steps of size `dt` from (z_t, t [B]); times are clipped at 0. No gradient
  flows through the targets."""
  chex.assert_rank([z_t, t], [2, 1])
  z, states, log_probs = z_t, [], []
  for k in range(num_teacher_steps):
    t_k, s_k = jnp.maximum(t - k * dt, 0.0), jnp.maximum(t - (k + 1) * dt, 0.0)
    lp = jax.lax.stop_gradient(teacher_log_probs_fn(z, schedule.sigma(t_k)))
    z = ancestral_step(jax.random.fold_in(key, k), lp, z, t_k, s_k, mask_index=mask_index,
                       schedule=schedule)
    states.append(z)
    log_probs.append(lp)
  return assign_targets(z_t, states, log_probs), z


def sdtt_loss(*, student_log_probs_fn: LogProbsFn, teacher_log_probs_fn: LogProbsFn,
              z_t: jnp.ndarray, t: jnp.ndarray, dt: float, key: jax.Array, mask_index: int,
              schedule: LogLinearSchedule, divergence: str = 'kl_reverse',
              num_teacher_steps: int = 2) -> jnp.ndarray:
  """Per-sequence sum [B] over the positions masked in z_t of d(student x_theta(z_t, t),
  SDTT target), with d = DIVERGENCES[divergence] over the real tokens. SDTT averages over the
  masked tokens of the batch: divide the batch's sum by its number of masked tokens."""
  d = check_divergence(divergence).fn
  target, _ = sdtt_targets(teacher_log_probs_fn=teacher_log_probs_fn, z_t=z_t, t=t, dt=dt,
                           key=key, mask_index=mask_index, schedule=schedule,
                           num_teacher_steps=num_teacher_steps)
  student = student_log_probs_fn(z_t, schedule.sigma(t))
  chex.assert_equal_shape([student, target])
  per_position = d(_real_tokens(student, mask_index), _real_tokens(target, mask_index))
  return jnp.sum(jnp.where(z_t == mask_index, per_position, 0.0), axis=-1)
