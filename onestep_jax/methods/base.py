"""What a method hands to the trainer and to evaluation: groups, phases, stages, samplers, export."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

from onestep_jax.train.spec import Group, Phase, Stage

# sample_fn(params, key, num, labels) -> samples [num, ...]; `params` maps group names to params
# (EMA params where the group keeps an EMA), `labels` is one-hot [num, C] or None.
SampleFn = Callable[[Mapping[str, Any], Any, int, Optional[Any]], Any]


@dataclasses.dataclass(frozen=True)
class Generator:
  """A way to draw samples from a trained model; metrics are named `<model>/<metric>@<nfe>`."""
  model: str  # e.g. 'teacher' or 'student'
  nfe: int  # network evaluations per sample
  sample_fn: SampleFn


@dataclasses.dataclass(frozen=True)
class MethodSetup:
  """Groups, phases and stages for the trainer, plus how to initialise, sample and export."""
  groups: tuple[Group, ...]
  phases: tuple[Phase, ...]
  stages: tuple[Stage, ...]
  init_params: Callable[[Any], dict[str, Any]]  # key -> params of every group (frozen ones too)
  generators: tuple[Generator, ...]
  export_group: str  # the group whose (EMA) parameters are exported
  export_kwargs: Mapping[str, Any]  # JSON-able description rebuilding the exported network
  teacher_identity: Optional[str] = None  # recorded in checkpoints; None when no teacher is used
