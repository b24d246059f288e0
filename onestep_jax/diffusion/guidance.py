"""Guided denoisers: classifier-free guidance and autoguidance.

Both extrapolate from a "bad" denoiser D_0 towards a "good" one D_1,
D_w = D_0 + w (D_1 - D_0) = w D_1 + (1 - w) D_0, so w = 1 gives D_1 and w = 0 gives D_0
(the convention of Karras et al. 2024, arXiv 2406.02507, Eq. 1). Since denoisers and scores
differ by an affine map at fixed sigma, the guided score is the score of p_1^w p_0^(1-w).
Each guided denoiser costs two denoiser evaluations.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

# How the unconditional model is asked for: 'none' passes labels=None; 'zeros' passes an all-zero
# one-hot, the unconditional input of EDM's class-conditional networks.
_UNCONDITIONAL_LABELS = {
    'none': lambda labels: None,
    'zeros': jnp.zeros_like,
}


def _extrapolate(d_bad, d_good, scale):
  return d_bad + scale * (d_good - d_bad)


def classifier_free_guidance(denoiser: Callable, *, scale, unconditional: str = 'none') -> Callable:
  """D_w(x, sigma, c) = D(x, sigma, null) + w (D(x, sigma, c) - D(x, sigma, null)).

  Ho & Salimans 2022 (arXiv 2207.12598) with EDM2's convention: `scale` w = 1 is the conditional
  model, w = 0 the unconditional one, w > 1 guides. `unconditional` ('none' or 'zeros') says how the
  null label is passed. Called with labels=None, the guided denoiser is the unconditional one.
  """
  if unconditional not in _UNCONDITIONAL_LABELS:
    raise ValueError(f'unknown unconditional label mode {unconditional!r}; valid choices: '
                     f'{sorted(_UNCONDITIONAL_LABELS)}')
  null_labels = _UNCONDITIONAL_LABELS[unconditional]

  def guided(x, sigma, labels=None):
    if labels is None:
      return denoiser(x, sigma, None)
    d_uncond = denoiser(x, sigma, null_labels(labels))
    return _extrapolate(d_uncond, denoiser(x, sigma, labels), scale)

  return guided


def autoguidance(main: Callable, weak: Callable, *, scale) -> Callable:
  """D_w = D_weak + w (D_main - D_weak) (Karras et al. 2024, arXiv 2406.02507, Eq. 1).

  `weak` is a smaller or less-trained version of `main`; w = 1 is the main model.
  """

  def guided(x, sigma, labels=None):
    d_weak = weak(x, sigma, labels)
    return _extrapolate(d_weak, main(x, sigma, labels), scale)

  return guided
