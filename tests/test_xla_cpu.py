"""The CPU compile options of onestep_jax.xla_cpu: choice, overrides, and unchanged results."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax import xla_cpu


pytestmark = pytest.mark.usefixtures('fresh_xla_cpu_options')


def test_parse_fusion_types():
  assert xla_cpu.parse_fusion_types('dot, eltwise,REDUCE') == (
      'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE')
  assert xla_cpu.parse_fusion_types('') == ''
  with pytest.raises(ValueError, match='unknown YNNPACK fusion type'):
    xla_cpu.parse_fusion_types('dot,convolution')


_DEFAULTS = {o.flag: o.parse(o.default) for o in xla_cpu.OPTIONS
             if o.default != xla_cpu.XLA_DEFAULT}


def _defaults_but(**changes):
  """The default options with `changes` (flag: value, or None to leave the flag out)."""
  out = {**_DEFAULTS, **changes}
  return {flag: value for flag, value in out.items() if value is not None}


def test_default_options_on_cpu():
  assert jax.default_backend() == 'cpu'
  assert xla_cpu.compiler_options() == {
      xla_cpu.FLAG: xla_cpu.parse_fusion_types(xla_cpu.DEFAULT),
      xla_cpu.OPT_LEVEL_FLAG: xla_cpu.DEFAULT_OPT_LEVEL,  # jaxlib's own scheduler
      xla_cpu.DISABLED_PASSES_FLAG: 'logistic-expander'}


@pytest.mark.parametrize('variable, env, xla_flags, expected', [
    # Without YNNPACK's element-wise fusions the logistic expander stays on.
    (xla_cpu.ENV, 'individual_dot,reduce', '', _defaults_but(
        **{xla_cpu.FLAG: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE',
           xla_cpu.DISABLED_PASSES_FLAG: None})),
    (xla_cpu.ENV, 'xla_default', '', _defaults_but(**{xla_cpu.FLAG: None,
                                                      xla_cpu.DISABLED_PASSES_FLAG: None})),
    (xla_cpu.ENV, None, f'--{xla_cpu.FLAG}=individual_dot',  # XLA_FLAGS win
     _defaults_but(**{xla_cpu.FLAG: None, xla_cpu.DISABLED_PASSES_FLAG: None})),
    (xla_cpu.ENV, 'dot', f'--{xla_cpu.FLAG}=reduce',
     _defaults_but(**{xla_cpu.FLAG: None, xla_cpu.DISABLED_PASSES_FLAG: None})),
    (xla_cpu.OPT_LEVEL_ENV, '3', '', _defaults_but(**{xla_cpu.OPT_LEVEL_FLAG: '3'})),
    (xla_cpu.OPT_LEVEL_ENV, 'xla_default', '', _defaults_but(**{xla_cpu.OPT_LEVEL_FLAG: None})),
    (xla_cpu.OPT_LEVEL_ENV, None, f'--{xla_cpu.OPT_LEVEL_FLAG}=2',
     _defaults_but(**{xla_cpu.OPT_LEVEL_FLAG: None})),
    (xla_cpu.SCHEDULER_ENV, 'memory_optimized', '',
     _defaults_but(**{xla_cpu.SCHEDULER_FLAG: 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'})),
    (xla_cpu.SCHEDULER_ENV, 'memory_optimized',
     f'--{xla_cpu.SCHEDULER_FLAG}=CPU_SCHEDULER_TYPE_DEFAULT', _defaults_but()),
    (xla_cpu.DISABLED_PASSES_ENV, 'xla_default', '',
     _defaults_but(**{xla_cpu.DISABLED_PASSES_FLAG: None})),
    (xla_cpu.DISABLED_PASSES_ENV, ' logistic-expander, transpose-folding ', '',
     _defaults_but(**{xla_cpu.DISABLED_PASSES_FLAG: 'logistic-expander,transpose-folding'})),
    (xla_cpu.DISABLED_PASSES_ENV, None, f'--{xla_cpu.DISABLED_PASSES_FLAG}=algsimp',
     _defaults_but(**{xla_cpu.DISABLED_PASSES_FLAG: None})),
])
def test_overrides(monkeypatch, variable, env, xla_flags, expected):
  if env is not None:
    monkeypatch.setenv(variable, env)
  monkeypatch.setenv('XLA_FLAGS', xla_flags)
  assert xla_cpu.compiler_options() == expected


def test_other_passes_stay_disabled_without_the_element_wise_fusions(monkeypatch):
  monkeypatch.setenv(xla_cpu.ENV, 'dot,reduce')
  monkeypatch.setenv(xla_cpu.DISABLED_PASSES_ENV, 'logistic-expander,transpose-folding')
  assert xla_cpu.compiler_options()[xla_cpu.DISABLED_PASSES_FLAG] == 'transpose-folding'


def test_no_options_left_means_backend_default(monkeypatch):
  for option in xla_cpu.OPTIONS:
    monkeypatch.setenv(option.env, xla_cpu.XLA_DEFAULT)
  assert xla_cpu.compiler_options() is None


@pytest.mark.parametrize('variable, value', [
    (xla_cpu.ENV, 'dot,convolutions'), (xla_cpu.OPT_LEVEL_ENV, '4'),
    (xla_cpu.OPT_LEVEL_ENV, 'O2'), (xla_cpu.SCHEDULER_ENV, 'memory'),
    (xla_cpu.DISABLED_PASSES_ENV, ''), (xla_cpu.DISABLED_PASSES_ENV, 'logistic expander')])
def test_bad_value_in_environment_is_an_error(monkeypatch, variable, value):
  monkeypatch.setenv(variable, value)
  with pytest.raises(ValueError, match=variable):
    xla_cpu.compiler_options()


def test_option_unknown_to_jaxlib_falls_back_with_a_warning(monkeypatch):
  unknown = dataclasses.replace(xla_cpu.OPTIONS[0], flag='xla_cpu_no_such_option_in_any_jaxlib')
  monkeypatch.setattr(xla_cpu, 'OPTIONS', (unknown,) + xla_cpu.OPTIONS[1:])
  with pytest.warns(UserWarning, match='does not accept'):
    assert xla_cpu.compiler_options() is None


def test_a_jaxlib_without_an_unexpanded_logistic_keeps_the_expander(monkeypatch):
  real = xla_cpu.check_compiles

  def check_compiles(options):  # as a jaxlib whose YNNPACK fusions had no sigmoid would fail
    if xla_cpu.LOGISTIC_EXPANDER in options.get(xla_cpu.DISABLED_PASSES_FLAG, ''):
      raise jax.errors.JaxRuntimeError('UNIMPLEMENTED: HLO opcode `logistic` is not supported')
    real(options)

  monkeypatch.setattr(xla_cpu, 'check_compiles', check_compiles)
  with pytest.warns(UserWarning, match='logistic expander stays on'):
    assert xla_cpu.compiler_options() == _defaults_but(**{xla_cpu.DISABLED_PASSES_FLAG: None})


def test_conv_net_values_and_gradients_unchanged():
  """A convolution + group norm + SiLU + attention-like product net: forward and parameter
  gradient with the library's options equal XLA's defaults up to float32 rounding."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(keys[0], (4, 16, 16, 8))
  params = {'w1': 0.2 * jax.random.normal(keys[1], (3, 3, 8, 16)),
            'w2': 0.2 * jax.random.normal(keys[2], (1, 1, 16, 8)),
            'q': 0.2 * jax.random.normal(keys[3], (8, 8))}

  def loss(p, x):
    conv = lambda h, w: jax.lax.conv_general_dilated(h, w, (1, 1), 'SAME',
                                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    h = conv(x, p['w1'])
    g = h.reshape(*h.shape[:3], 4, 4)
    g = (g - g.mean((1, 2, 4), keepdims=True)) / jnp.sqrt(g.var((1, 2, 4), keepdims=True) + 1e-5)
    h = jax.nn.silu(g.reshape(h.shape))
    h = conv(h, p['w2']) + x
    tokens = h.reshape(h.shape[0], -1, h.shape[-1])
    attn = jax.nn.softmax(tokens @ p['q'] @ tokens.transpose(0, 2, 1) / 8.0, axis=-1)
    return jnp.mean((attn @ tokens) ** 2)

  grad = lambda p, x: jax.value_and_grad(loss)(p, x)
  (v_ref, g_ref), (v, g) = jax.jit(grad)(params, x), xla_cpu.jit(grad)(params, x)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5)
  for name, ref in g_ref.items():
    np.testing.assert_allclose(g[name], ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
