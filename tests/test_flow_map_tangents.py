"""The JVP tangents of the flow-map losses equal finite differences: through the MLP student, and
through a U-Net with self-attention whose parameters are sharded over 'fsdp' on 8 fake CPU
devices (the path of `train.fsdp`)."""
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp

from onestep_jax.losses.flow_map import directional_derivative
from onestep_jax.methods.denoisers import NetworkDenoiser
from onestep_jax.methods.flow_map import FlowMapNet
from onestep_jax.methods.networks import build_network

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tangents(student, params, x_t, t, s, v, mode, fd_step=1e-3):
  """(d/dt F along (v, 1) at fixed s, d/ds F) of the student, by `mode`."""
  F = student.bind(params)
  kw = dict(tangent=mode, fd_step=fd_step)
  _, d_t = directional_derivative(lambda x, time: F(x, time, s), (x_t, t), (v, jnp.ones_like(t)),
                                  **kw)
  _, d_s = directional_derivative(lambda time: F(x_t, t, time), (s,), (jnp.ones_like(s),), **kw)
  return d_t, d_s


def relative_error(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_jvp_equals_finite_differences_through_the_mlp_student():
  net = NetworkDenoiser(build_network('mlp', dict(data_dim=2, hidden_dim=32, num_layers=2)))
  student = FlowMapNet(net)
  params = jax.tree.map(lambda l: l + 0.2, student.init(jax.random.PRNGKey(0), example_shape=(2,),
                                                        num_classes=0))
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  x_t, v = jax.random.normal(k1, (16, 2)), jax.random.normal(k2, (16, 2))
  t = jnp.linspace(0.1, 0.9, 16)
  s = 0.4 * t
  fn = jax.jit(tangents, static_argnums=(0, 6, 7))
  # The MLP embeds 100 c_noise(t): a small step keeps the truncation error below 1e-3.
  jvp, fd = (fn(student, params, x_t, t, s, v, mode, 2e-4) for mode in ('jvp',
                                                                         'finite_difference'))
  for a, b in zip(jvp, fd):
    assert float(jnp.linalg.norm(a)) > 1e-2
    assert relative_error(b, a) < 1e-3


SCRIPT = r'''
import jax, jax.numpy as jnp
import numpy as np
import sys
sys.path.insert(0, TESTS_DIR)
from test_flow_map_tangents import tangents, relative_error
from onestep_jax.methods.denoisers import NetworkDenoiser
from onestep_jax.methods.flow_map import FlowMapNet
from onestep_jax.methods.networks import build_network
from onestep_jax.train import mesh as mesh_lib

assert jax.device_count() == 8
kwargs = dict(img_resolution=8, in_channels=1, out_channels=1, model_channels=8,
              channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)
student = FlowMapNet(NetworkDenoiser(build_network('song_unet', kwargs)))
# Parameters as if trained, from the shapes alone (a U-Net's initialisation compiles slowly).
shapes = jax.eval_shape(lambda k: student.init(k, example_shape=(8, 8, 1), num_classes=0),
                        jax.random.PRNGKey(0))
rng = np.random.default_rng(0)  # host draws: no random-number program to compile
draw = lambda scale: (lambda l: scale * rng.standard_normal(l.shape, np.float32))
params = {k: jax.tree.map(draw(1.0 if 'second_time' in k else 0.2), v) for k, v in shapes.items()}
k1, k2 = jax.random.split(jax.random.PRNGKey(1))
x_t, v = jax.random.normal(k1, (8, 8, 8, 1)), jax.random.normal(k2, (8, 8, 8, 1))
t = jnp.linspace(0.1, 0.9, 8)
s = 0.4 * t

mesh = mesh_lib.make_mesh(fsdp=2)
p_sh = mesh_lib.tree_shardings(params, mesh, fsdp_min_size=1)
sharded = [l for l in jax.tree.leaves(p_sh) if 'fsdp' in l.spec]
assert len(sharded) > 10, len(sharded)
b_sh = mesh_lib.batch_sharding(mesh)
params = jax.device_put(params, p_sh)
x_t, v, t, s = (jax.device_put(a, b_sh) for a in (x_t, v, t, s))
fn = jax.jit(tangents, static_argnums=(0, 6, 7),
             in_shardings=(p_sh, b_sh, b_sh, b_sh, b_sh))
jvp = fn(student, params, x_t, t, s, v, 'jvp', 1e-2)
fd = fn(student, params, x_t, t, s, v, 'finite_difference', 1e-2)
for a, b in zip(jvp, fd):
  assert float(jnp.linalg.norm(a)) > 1e-2
  assert relative_error(b, a) < 1e-2, relative_error(b, a)
print('OK')
'''


def test_jvp_through_attention_with_fsdp_sharded_parameters_on_8_devices():
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run([sys.executable, '-c', f'TESTS_DIR = {str(ROOT / "tests")!r}\n' + SCRIPT],
                       capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
  assert out.returncode == 0 and out.stdout.strip().endswith('OK'), out.stdout + out.stderr
