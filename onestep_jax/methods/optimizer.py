"""Adam (or AdamW) under a method's settings (beta1, beta2, eps), with EDM's linear learning-rate
ramp-up (Karras et al. 2022, arXiv 2206.00364, App. F.3: `lr_rampup`; MDLM's `constant_warmup`)."""
from __future__ import annotations

from typing import Optional

import ml_collections
import optax


def adam(lr: float, m: ml_collections.ConfigDict, rampup_steps: int = 0,
         weight_decay: Optional[float] = None) -> optax.GradientTransformation:
  """Adam at rate `lr`; with `rampup_steps` > 0 the rate rises linearly from 0 to `lr` over the
  group's first `rampup_steps` updates (its own updates, not trainer steps). A `weight_decay`
  (even 0) makes it AdamW, whose optimiser state has one more (empty) entry."""
  # optax's schedule over 0 steps (e.g. int(0.5)) would hold the rate at 0 for good
  if rampup_steps < 0 or rampup_steps != int(rampup_steps):
    raise ValueError(f'learning-rate ramp-up steps must be a whole number >= 0, got {rampup_steps}')
  rate = optax.linear_schedule(0.0, lr, int(rampup_steps)) if rampup_steps else lr
  if weight_decay is None:
    return optax.adam(rate, b1=m.beta1, b2=m.beta2, eps=m.eps)
  return optax.adamw(rate, b1=m.beta1, b2=m.beta2, eps=m.eps, weight_decay=weight_decay)
