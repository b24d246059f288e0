"""What a method declares to the trainer: parameter groups, phases and stages.

The trainer knows nothing about any method. A method names its parameter groups (e.g. a frozen
teacher and a trainable generator), the phases of one training step (each phase updates some
groups by one loss) and a schedule of phases that may change between stages.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import optax

# loss_fn(params, batch, key) -> (scalar loss, dict of scalar metrics). `params` maps every group
# name (frozen ones included) to its parameters. A phase that `gives` returns a third value, the
# arrays it hands over; a phase that `takes` gets them as a fourth argument (see Phase).
LossFn = Callable[..., tuple]


@dataclasses.dataclass(frozen=True)
class Group:
  """A named set of parameters.

  Attributes:
    name: key of the group in the params dict handed to loss functions.
    trainable: False for frozen networks (e.g. the teacher); those are never checkpointed.
    optimizer: the optax transformation updating the group; required iff trainable.
    ema_halflife_nimg: keep an EMA of the group with this half-life, counted in training samples
      (Karras et al. 2022, arXiv 2206.00364, App. C: beta = 0.5 ** (batch_size / halflife)).
    ema_rampup_ratio: if set, the half-life is at most `ratio * samples seen so far` (EDM's
      ramp-up; EDM uses 0.05).
    clip_norm: if set, clip the group's gradient to this global norm before the optimizer.
  """
  name: str
  trainable: bool
  optimizer: Optional[optax.GradientTransformation] = None
  ema_halflife_nimg: Optional[float] = None
  ema_rampup_ratio: Optional[float] = None
  clip_norm: Optional[float] = None

  def __post_init__(self):
    if self.trainable and self.optimizer is None:
      raise ValueError(f'Trainable group {self.name!r} needs an optimizer.')
    if not self.trainable and (self.optimizer is not None or self.ema_halflife_nimg is not None
                               or self.clip_norm is not None):
      raise ValueError(f'Frozen group {self.name!r} cannot have an optimizer, EMA or clip_norm.')
    if self.ema_halflife_nimg is not None and self.ema_halflife_nimg <= 0:
      raise ValueError(f'Group {self.name!r}: ema_halflife_nimg must be > 0, '
                       f'got {self.ema_halflife_nimg}.')
    if self.ema_rampup_ratio is not None and self.ema_halflife_nimg is None:
      raise ValueError(f'Group {self.name!r}: ema_rampup_ratio needs ema_halflife_nimg.')
    if self.clip_norm is not None and self.clip_norm <= 0:
      raise ValueError(f'Group {self.name!r}: clip_norm must be > 0, got {self.clip_norm}.')

  def transform(self) -> optax.GradientTransformation:
    """The optimizer, preceded by global-norm clipping when `clip_norm` is set."""
    if self.clip_norm is None:
      return self.optimizer
    return optax.chain(optax.clip_by_global_norm(self.clip_norm), self.optimizer)


@dataclasses.dataclass(frozen=True)
class Phase:
  """One jitted update: gradients of `loss_fn` w.r.t. the groups in `updates` only.

  All other groups reach `loss_fn` through `jax.lax.stop_gradient`.

  A phase with `gives=True` hands arrays over to a later phase of the same step: its `loss_fn`
  returns (loss, metrics, handed), `handed` a tree of arrays (stop-gradient; leaves whose leading
  axis is the global batch are split like the batch). A phase with `takes=<name>` gets what
  phase <name> last handed over in this step as a fourth argument: `loss_fn(params, batch, key,
  handed)`. Two programs then share work without one holding both's activations (e.g. a
  generator update handing its samples to a fake-score update, `methods/one_step.py`).
  """
  name: str
  loss_fn: LossFn
  updates: tuple[str, ...]
  gives: bool = False
  takes: Optional[str] = None

  def __post_init__(self):
    if isinstance(self.updates, str):
      raise ValueError(f'Phase {self.name!r}: updates must be a tuple of group names, '
                       f'got the string {self.updates!r}.')
    object.__setattr__(self, 'updates', tuple(self.updates))
    if not self.updates:
      raise ValueError(f'Phase {self.name!r} updates no group.')
    if self.takes == self.name:
      raise ValueError(f'Phase {self.name!r} cannot take what it hands over itself.')


@dataclasses.dataclass(frozen=True)
class Stage:
  """A schedule used for steps `< until_step` (None: until the end of training).

  `schedule` lists (phase name, repeats) run in order; one trainer step is one pass over it,
  e.g. [('fake_score', 5), ('generator', 1)].
  """
  schedule: tuple[tuple[str, int], ...]
  until_step: Optional[int] = None

  def __post_init__(self):
    schedule = tuple((str(name), int(k)) for name, k in self.schedule)
    if not schedule:
      raise ValueError('A stage needs a non-empty schedule.')
    for name, k in schedule:
      if k < 1:
        raise ValueError(f'Phase {name!r} repeats must be >= 1, got {k}.')
    object.__setattr__(self, 'schedule', schedule)


def validate(groups: Sequence[Group], phases: Sequence[Phase], stages: Sequence[Stage]) -> None:
  """Checks names and stage order; raises ValueError naming the problem."""
  group_names = [g.name for g in groups]
  if len(set(group_names)) != len(group_names):
    raise ValueError(f'Duplicate group names in {group_names}.')
  trainable = [g.name for g in groups if g.trainable]
  phase_names = [p.name for p in phases]
  if len(set(phase_names)) != len(phase_names):
    raise ValueError(f'Duplicate phase names in {phase_names}.')
  for p in phases:
    for g in p.updates:
      if g not in trainable:
        raise ValueError(f'Phase {p.name!r} updates {g!r}, which is not a trainable group; '
                         f'trainable groups: {trainable}.')
  givers = [p.name for p in phases if p.gives]
  for p in phases:
    if p.takes is not None and p.takes not in givers:
      raise ValueError(f'Phase {p.name!r} takes from {p.takes!r}, which is not a phase with '
                       f'gives=True; those are {givers}.')
  takes = {p.name: p.takes for p in phases}
  if not stages:
    raise ValueError('At least one stage is needed.')
  for i, s in enumerate(stages):
    for j, (name, _) in enumerate(s.schedule):
      if name not in phase_names:
        raise ValueError(f'Stage {i} schedules unknown phase {name!r}; phases: {phase_names}.')
      if takes[name] is not None and takes[name] not in [n for n, _ in s.schedule[:j]]:
        raise ValueError(f'Stage {i} runs phase {name!r} without running {takes[name]!r}, '
                         'whose arrays it takes, before it.')
    if s.until_step is None and i != len(stages) - 1:
      raise ValueError(f'Only the last stage may have until_step=None (stage {i} has it).')
    if i > 0 and s.until_step is not None and s.until_step <= stages[i - 1].until_step:
      raise ValueError(f'Stage until_step values must increase; stage {i} has {s.until_step} '
                       f'after {stages[i - 1].until_step}.')


def stage_at(stages: Sequence[Stage], step: int) -> Stage:
  """The stage that runs step `step`."""
  for s in stages:
    if s.until_step is None or step < s.until_step:
      return s
  raise ValueError(f'No stage covers step {step}; the last stage ends at '
                   f'{stages[-1].until_step}. Give the last stage until_step=None.')
