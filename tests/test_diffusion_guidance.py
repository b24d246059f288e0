"""Classifier-free guidance and autoguidance on exact Gaussian denoisers."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.diffusion import guidance

WEIGHTS = np.array([0.6, 0.4])
MEANS = np.array([-1.0, 2.0])
STDS = np.array([0.5, 0.8])


def _component_denoisers(x, sigma):
  """[B, K]: exact denoiser of each 1-D class N(MEANS[k], STDS[k]^2) at x of shape [B, 1]."""
  var = STDS**2
  return MEANS + var / (var + sigma[:, None]**2) * (x - MEANS)


def class_conditional_denoiser(x, sigma, labels=None):
  """Exact denoiser of the two-class 1-D mixture; labels None or an all-zero one-hot row is
  unconditional (the EDM convention), a one-hot row selects that class."""
  sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
  per_class = _component_denoisers(x, sigma)
  total_var = STDS**2 + sigma[:, None]**2
  log_resp = jnp.log(WEIGHTS) - 0.5 * (x - MEANS)**2 / total_var - 0.5 * jnp.log(total_var)
  unconditional = jnp.sum(jax.nn.softmax(log_resp, axis=-1) * per_class, -1, keepdims=True)
  if labels is None:
    return unconditional
  conditional = jnp.sum(labels * per_class, -1, keepdims=True)
  return jnp.where(jnp.sum(labels, -1, keepdims=True) > 0, conditional, unconditional)


X = jnp.array([[-2.0], [0.3], [1.0], [4.0]])
SIGMA = jnp.array([0.2, 1.0, 1.5, 3.0])
LABELS = jax.nn.one_hot(jnp.array([0, 1, 1, 0]), 2)


@pytest.mark.parametrize('unconditional', ['none', 'zeros'])
def test_cfg_endpoints(unconditional):
  for scale, expected in ((1.0, class_conditional_denoiser(X, SIGMA, LABELS)),
                          (0.0, class_conditional_denoiser(X, SIGMA))):
    guided = guidance.classifier_free_guidance(class_conditional_denoiser, scale=scale,
                                               unconditional=unconditional)
    np.testing.assert_allclose(guided(X, SIGMA, LABELS), expected, rtol=1e-6, atol=1e-6)


def test_cfg_matches_a_hand_computation():
  x, sigma, scale = 0.3, 1.0, 3.0  # class 1 requested
  d = [m + s**2 / (s**2 + sigma**2) * (x - m) for m, s in zip(MEANS, STDS)]
  lik = [w * math.exp(-0.5 * (x - m)**2 / (s**2 + sigma**2)) / math.sqrt(s**2 + sigma**2)
         for w, m, s in zip(WEIGHTS, MEANS, STDS)]
  d_uncond = (lik[0] * d[0] + lik[1] * d[1]) / (lik[0] + lik[1])
  expected = d_uncond + scale * (d[1] - d_uncond)
  guided = guidance.classifier_free_guidance(class_conditional_denoiser, scale=scale)
  out = guided(jnp.array([[x]]), jnp.array([sigma]), jnp.array([[0.0, 1.0]]))
  np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_cfg_without_labels_is_unconditional_and_jits():
  guided = guidance.classifier_free_guidance(class_conditional_denoiser, scale=4.0,
                                             unconditional='zeros')
  np.testing.assert_allclose(guided(X, SIGMA), class_conditional_denoiser(X, SIGMA), rtol=1e-6)
  jitted = jax.jit(guided)
  np.testing.assert_allclose(jitted(X, SIGMA, LABELS), guided(X, SIGMA, LABELS), rtol=1e-5)


def test_cfg_rejects_unknown_unconditional_mode():
  with pytest.raises(ValueError, match=r"unknown unconditional label mode 'null'.*'none', 'zeros'"):
    guidance.classifier_free_guidance(class_conditional_denoiser, scale=2.0, unconditional='null')


def _gaussian_denoiser(std):
  return lambda x, sigma, labels=None: std**2 / (std**2 + sigma[:, None]**2) * x


def test_autoguidance_endpoints_and_hand_computation():
  main, weak = _gaussian_denoiser(0.5), _gaussian_denoiser(0.8)
  np.testing.assert_allclose(guidance.autoguidance(main, weak, scale=1.0)(X, SIGMA),
                             main(X, SIGMA), rtol=1e-6)
  np.testing.assert_allclose(guidance.autoguidance(main, weak, scale=0.0)(X, SIGMA),
                             weak(X, SIGMA), rtol=1e-6)
  # x = 1, sigma = 1: main 0.25 / 1.25 = 0.2, weak 0.64 / 1.64; lambda = 2 gives 2 * 0.2 - weak.
  out = guidance.autoguidance(main, weak, scale=2.0)(jnp.array([[1.0]]), jnp.array([1.0]))
  np.testing.assert_allclose(out[0, 0], 0.4 - 0.64 / 1.64, atol=1e-6)


def test_guided_score_is_the_weighted_score_combination():
  """(D_w - x) / sigma^2 = w s_main + (1 - w) s_weak: the score of p_main^w p_weak^(1-w)."""
  main, weak = _gaussian_denoiser(0.5), _gaussian_denoiser(0.8)
  w = 2.5
  guided = guidance.autoguidance(main, weak, scale=w)(X, SIGMA)
  score = lambda std: -X / (std**2 + SIGMA[:, None]**2)  # exact score of N(0, std^2 + sigma^2)
  np.testing.assert_allclose((guided - X) / SIGMA[:, None]**2,
                             w * score(0.5) + (1 - w) * score(0.8), rtol=1e-5)
