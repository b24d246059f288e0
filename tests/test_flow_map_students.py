"""Flow-map students: a student started from a teacher is the teacher's velocity at every s, the
boundary f(x, t, t) = x is exact, and the second time is a real input once trained."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.diffusion import flow_maps
from onestep_jax.methods.denoisers import NetworkDenoiser
from onestep_jax.methods.flow_map import FlowMapNet
from onestep_jax.methods.networks import build_network

UNET = dict(img_resolution=4, in_channels=1, out_channels=1, model_channels=8,
            channel_mult=(1,), num_blocks=1, attn_resolutions=(), dropout=0.0)
NETS = {
    'mlp': (dict(data_dim=3, hidden_dim=16, num_layers=2), (3,)),
    'song_unet': (UNET, (4, 4, 1)),
}


def _random_params(student, shape, seed):
  """Random parameters of every layer (as if trained; no zero layer left), drawn on the host from
  the shapes alone: compiling a U-Net's initialisation would cost more than the test."""
  shapes = jax.eval_shape(lambda k: student.init(k, example_shape=shape, num_classes=0),
                          jax.random.PRNGKey(0))
  rng = np.random.default_rng(seed)
  draw = lambda scale: (lambda l: scale * rng.standard_normal(l.shape, np.float32))
  return {k: jax.tree.map(draw(1.0 if 'second_time' in k else 0.2), v) for k, v in shapes.items()}


# DhariwalUNet adds the second time through the same helper (nets.edm_layers.add_second_time).
@pytest.mark.parametrize('name, objective', [('mlp', 'edm'), ('mlp', 'flow'),
                                             ('song_unet', 'edm')])
def test_student_starts_as_the_teacher_and_keeps_the_boundary_exactly(name, objective):
  kwargs, shape = NETS[name]
  net = NetworkDenoiser(build_network(name, kwargs), objective=objective)
  student = FlowMapNet(net)
  trained = _random_params(student, shape, 1)
  second = {k for k in trained if 'second_time' in k}
  assert len(second) == 1
  teacher = {k: v for k, v in trained.items() if k not in second}
  from_teacher = student.init(jax.random.PRNGKey(2), example_shape=shape, num_classes=0,
                              teacher_params=teacher)

  x = jax.random.normal(jax.random.PRNGKey(3), (4,) + shape)
  t = jnp.array([0.9, 0.5, 0.2, 0.05])
  F = jax.jit(lambda p, x, t, s: student.average_velocity(p, x, t, s))
  v = jax.jit(flow_maps.teacher_velocity(net.bind(teacher)))(x, t)
  assert float(jnp.max(jnp.abs(v))) > 0.1
  for frac in (0.0, 0.3, 1.0):
    np.testing.assert_allclose(F(from_teacher, x, t, frac * t), v, rtol=1e-5, atol=1e-5)

  f = flow_maps.flow_map(lambda x, t, s, labels: F(trained, x, t, s))
  np.testing.assert_array_equal(f(x, t, t), x)
  assert float(jnp.max(jnp.abs(F(trained, x, t, 0 * t) - F(trained, x, t, 0.5 * t)))) > 1e-3


def test_fresh_second_time_layer_is_zero():
  kwargs, shape = NETS['mlp']
  student = FlowMapNet(NetworkDenoiser(build_network('mlp', kwargs)))
  fresh = student.init(jax.random.PRNGKey(0), example_shape=shape, num_classes=0)
  assert all(not jnp.any(l) for l in jax.tree.leaves(fresh['second_time']))
  assert any(jnp.any(l) for l in jax.tree.leaves(fresh['Dense_0']))


def test_student_refuses_a_teacher_of_another_network():
  kwargs, shape = NETS['mlp']
  student = FlowMapNet(NetworkDenoiser(build_network('mlp', kwargs)))
  with pytest.raises(ValueError, match='lacks'):
    student.init(jax.random.PRNGKey(0), example_shape=shape, num_classes=0,
                 teacher_params={'Dense_99': {}})
