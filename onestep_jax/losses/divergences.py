"""The f-divergence family as data: each row gives f and the weighting h(r) = f''(r) r^2.

Convention (f-distill, Xu et al. 2025, arXiv 2502.15681, Sec. 3): p is the teacher (data), q the
student, r = p / q and D_f(p || q) = E_q[f(r)] with f convex and f(1) = 0. At every noise level,
  grad_theta D_f(p_t || q_t) = E[h(r(x_t)) (grad log q_t - grad log p_t)(x_t) . dx_t/dtheta]
(f-distill, Thm. 1), and the same h weighs the squared score difference in the diffusion
expansion of D_f (Uni-Instruct, Wang et al. 2025, arXiv 2505.20755, Thm. 3.1; written there with
the letters of p and q swapped, the ratio is still teacher / student).
Rows follow f-distill's Table 1 (plus Pearson and Neyman chi^2); constant factors of f scale h
and are immaterial where h is normalised by its batch mean.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class FDivergence:
  """One row of the f table."""
  f: Callable[[jnp.ndarray], jnp.ndarray]  # convex, f(1) = 0
  h: Callable[[jnp.ndarray], jnp.ndarray]  # f''(r) r^2 (tested against autodiff of f)
  uses_ratio: bool = True  # False when h is constant, so no density ratio is needed


DIVERGENCES = {
    'reverse_kl': FDivergence(f=lambda r: -jnp.log(r), h=jnp.ones_like, uses_ratio=False),
    'softened_reverse_kl': FDivergence(f=lambda r: (r + 1) * jnp.log((r + 1) / (2 * r)),
                                       h=lambda r: 1 / (r + 1)),
    'forward_kl': FDivergence(f=lambda r: r * jnp.log(r), h=lambda r: r),
    'jensen_shannon': FDivergence(f=lambda r: r * jnp.log(r) - (r + 1) * jnp.log((r + 1) / 2),
                                  h=lambda r: r / (r + 1)),
    'squared_hellinger': FDivergence(f=lambda r: 1 - jnp.sqrt(r), h=lambda r: jnp.sqrt(r) / 4),
    'jeffreys': FDivergence(f=lambda r: (r - 1) * jnp.log(r), h=lambda r: r + 1),
    'pearson_chi2': FDivergence(f=lambda r: (r - 1)**2, h=lambda r: 2 * r**2),
    'neyman_chi2': FDivergence(f=lambda r: (1 - r)**2 / r, h=lambda r: 2 / r),
}


def get_divergence(name: str) -> FDivergence:
  """The row `name` of DIVERGENCES; unknown names list the valid ones."""
  if name not in DIVERGENCES:
    raise ValueError(f'unknown divergence {name!r}; valid: {sorted(DIVERGENCES)}')
  return DIVERGENCES[name]


def checked_ratio(ratio: Optional[jnp.ndarray], divergence: str, batch: int) -> jnp.ndarray:
  """The density ratio [B] a loss weighted by `divergence` uses: `ratio` itself (shape checked), or
  ones when it is None and the row's h is constant; a row that needs the ratio refuses None."""
  if ratio is None:
    if get_divergence(divergence).uses_ratio:
      raise ValueError(f'divergence {divergence!r} needs the density ratio')
    ratio = jnp.ones((batch,), jnp.float32)
  chex.assert_shape(ratio, (batch,))
  return ratio


def has_concave_h(name: str) -> bool:
  """Whether h = f''(r) r^2 of row `name` is concave (h'' < 0: Jensen-Shannon, squared
  Hellinger), read at r = 1."""
  return float(h_and_derivatives(name, jnp.ones((1,), jnp.float32))[2][0]) < 0


def h_and_derivatives(name: str, ratio: jnp.ndarray):
  """(h(r), h'(r), h''(r)) elementwise, the derivatives by autodiff of the table's h."""
  h = get_divergence(name).h
  d1 = jax.grad(lambda r: h(r))
  d2 = jax.grad(d1)
  flat = ratio.reshape(-1)
  return h(ratio), jax.vmap(d1)(flat).reshape(ratio.shape), jax.vmap(d2)(flat).reshape(ratio.shape)
