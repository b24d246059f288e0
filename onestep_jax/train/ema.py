"""Exponential moving average of parameters with a half-life in samples, as in EDM.

Karras et al. 2022 (arXiv 2206.00364), App. C / training_loop.py: after the optimizer step that
follows `nimg` samples, beta = 0.5 ** (batch_size / max(h, 1e-8)) with
h = min(halflife_nimg, nimg * rampup_ratio) (no min without ramp-up), then
ema <- beta * ema + (1 - beta) * params.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp


def ema_beta(*, nimg, batch_size: int, halflife_nimg: float,
             rampup_ratio: Optional[float] = None) -> jax.Array:
  """Decay for the EMA update that follows the step starting at `nimg` samples seen."""
  halflife = jnp.asarray(halflife_nimg, jnp.float32)
  if rampup_ratio is not None:
    halflife = jnp.minimum(halflife, jnp.asarray(nimg, jnp.float32) * rampup_ratio)
  return 0.5 ** (batch_size / jnp.maximum(halflife, 1e-8))


def ema_update(ema: Any, params: Any, beta) -> Any:
  """ema <- beta * ema + (1 - beta) * params, leaf-wise in each leaf's dtype."""
  return jax.tree.map(lambda e, p: (p + beta * (e - p)).astype(e.dtype), ema, params)
