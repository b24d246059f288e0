"""benchmarks/uni_instruct_terms.py: the split of Uni-Instruct's gradient into its terms."""

import jax
import jax.numpy as jnp
import numpy as np

from onestep_jax.losses.sim import sim_generator_loss
from train_helpers.scripts import load_script

uni_instruct_terms = load_script('benchmarks/uni_instruct_terms.py')


def test_terms_vanish_where_the_divergence_has_none_and_sim_is_what_is_left():
  """Reverse KL (h = 1) has no Diff-Instruct-type term, nor has forward KL without the projection
  term (h'' = 0); Pearson chi^2 has one. With h = 1 the SIM-type part is SIM(L2)'s gradient."""
  n = 16
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
  x_g = jax.random.normal(k1, (n, 2))
  base = dict(sigma=jnp.linspace(0.05, 2.0, n), noise=jax.random.normal(k2, (n, 2)),
              teacher_denoiser=lambda x, s, _: jnp.tanh(x) / (1.0 + s[:, None]),
              fake_denoiser=lambda x, s, _: 0.3 * x + 0.2 * jnp.sin(2.0 * x), normalize=False)
  ratio = jnp.exp(jax.random.normal(k3, (n,)))
  rkl = uni_instruct_terms.term_gradients({**base, 'ratio': None, 'divergence': 'reverse_kl'},
                                          x_g)
  np.testing.assert_allclose(rkl['di'], 0.0, atol=1e-6)
  sim = jax.grad(lambda x: jnp.sum(sim_generator_loss(
      x_g=x, distance='l2', **{k: v for k, v in base.items() if k != 'normalize'})))(x_g)
  np.testing.assert_allclose(rkl['sim'], sim, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(rkl['sampling_path']))) > 1e-3
  fkl = uni_instruct_terms.term_gradients(
      {**base, 'ratio': ratio, 'divergence': 'forward_kl', 'projection_ratio_term': False}, x_g)
  np.testing.assert_allclose(fkl['di'], 0.0, atol=1e-6)
  pearson = uni_instruct_terms.term_gradients(
      {**base, 'ratio': ratio, 'divergence': 'pearson_chi2'}, x_g)
  assert float(jnp.max(jnp.abs(pearson['di']))) > 1e-3
