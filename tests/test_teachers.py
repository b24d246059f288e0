"""Teachers for distillation: analytic, bundled and exported; their settings, identities and the
checks made before a distillation run trains."""
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.data.fashion_mnist import DEBIAN_DIR
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config
from onestep_jax.methods import build_method
from onestep_jax.methods.networks import build_network, init_network
from onestep_jax.methods.teachers import load_teacher
from onestep_jax.train.export import export_params

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(name, variant):
  return load_config_file(f'{ROOT}/configs/{name}.py:{variant}')


def _mlp_export(path, *, objective, data_dim=2, sigma_data=0.5):
  kwargs = {'data_dim': data_dim, 'hidden_dim': 16, 'num_layers': 1}
  params = init_network(build_network('mlp', kwargs), jax.random.PRNGKey(0),
                        example_shape=(data_dim,), num_classes=0)
  export_params(path, params, net_kwargs=kwargs,
                metadata={'network': 'mlp', 'objective': objective, 'sigma_data': sigma_data,
                          'num_classes': 0})
  return params


def test_bundled_digits_teacher_denoises_held_out_digits():
  data = get_dataset('digits', split='test')
  teacher = load_teacher('bundled:digits', data)
  x0 = data.sample(128, seed=0)
  for sigma in (0.2, 1.0, 5.0):
    noisy = x0 + sigma * np.asarray(jax.random.normal(jax.random.PRNGKey(0), x0.shape))
    denoised = np.asarray(teacher.denoise(teacher.params, noisy, sigma))
    # A trained denoiser beats both the noisy input and the best constant guess (the mean).
    err = np.mean((denoised - x0)**2)
    assert err < min(np.mean((noisy - x0)**2), np.mean((x0.mean(0) - x0)**2)), sigma
  assert teacher.network == 'song_unet' and teacher.example_shape == (8, 8, 1)


@pytest.mark.skipif(not os.path.isdir(DEBIAN_DIR), reason='Fashion-MNIST files not installed')
def test_bundled_fashion_mnist_teacher_denoises_test_images_and_its_config_loads():
  data = get_dataset('fashion_mnist', split='test')
  teacher = load_teacher('bundled:fashion_mnist', data)
  assert teacher.network == 'song_unet' and teacher.example_shape == (28, 28, 1)
  x0 = data.sample(32, seed=0)
  noisy = x0 + np.asarray(jax.random.normal(jax.random.PRNGKey(0), x0.shape))  # sigma = 1
  err = np.mean((np.asarray(teacher.denoise(teacher.params, noisy, 1.0)) - x0)**2)
  assert err < min(np.mean((noisy - x0)**2), np.mean((x0.mean(0) - x0)**2))
  for method in ('sid', 'ayf_emd'):
    c = load_config_file(f'{ROOT}/configs/distill_fashion_mnist.py:{method}')
    assert c.method.teacher == 'bundled:fashion_mnist' and c.data.name == 'fashion_mnist'


def test_analytic_teacher_identity_and_errors():
  ring = get_dataset('ring8')
  t = load_teacher('analytic', ring)
  assert t.identity == load_teacher('analytic', get_dataset('ring8')).identity
  assert t.identity != load_teacher('analytic', get_dataset('grid25')).identity
  with pytest.raises(ValueError, match='Gaussian-mixture.*teacher_toy2d.py'):
    load_teacher('analytic', get_dataset('moons'))
  with pytest.raises(ValueError, match='bundled'):
    load_teacher('bundled:nope', ring)
  with pytest.raises(FileNotFoundError, match='no/such/dir'):
    load_teacher('no/such/dir', ring)


def test_identity_is_the_content_so_a_moved_export_is_the_same_teacher(tmp_path):
  _mlp_export(tmp_path / 'a', objective='edm')
  shutil.copytree(tmp_path / 'a', tmp_path / 'moved')
  _mlp_export(tmp_path / 'other', objective='edm', sigma_data=0.5, data_dim=3)
  shutil.copytree(tmp_path / 'a', tmp_path / 'run' / 'export')  # a teacher run's workdir
  ids = [load_teacher(str(tmp_path / d)).identity for d in ('a', 'moved', 'run', 'other')]
  assert ids[0] == ids[1] == ids[2] != ids[3]


def test_student_exports_and_unknown_objectives_are_refused_by_name(tmp_path):
  _mlp_export(tmp_path / 'student', objective='one_step')
  with pytest.raises(ValueError, match="'one_step'.*not a diffusion teacher"):
    load_teacher(str(tmp_path / 'student'))


def test_distillation_takes_the_teachers_settings_and_refuses_data_that_do_not_fit(tmp_path):
  # The bundled digits teacher (8x8x1 U-Net) against the 2-D ring: refused before training.
  c = _config('distill_toy2d', 'diff_instruct')
  c.method.teacher = 'bundled:digits'
  with pytest.raises(ValueError, match=r'shape \(8, 8, 1\).*shape \(2,\)'):
    resolve_config(c, get_dataset('ring8'))
  # A 5-D teacher against 2-D data: refused before training.
  _mlp_export(tmp_path / 't5', objective='edm', data_dim=5)
  c.method.teacher = str(tmp_path / 't5')
  with pytest.raises(ValueError, match=r'shape \(5,\)'):
    resolve_config(c, get_dataset('ring8'))
  # A fitting teacher: its network, kwargs, sigma_data and objective replace the config's.
  _mlp_export(tmp_path / 'flow', objective='flow', sigma_data=0.9)
  c.method.teacher = str(tmp_path / 'flow')
  resolved = resolve_config(c, get_dataset('ring8'))
  assert resolved.net.kwargs.hidden_dim == 16 and resolved.net.kwargs.num_layers == 1
  assert resolved.method.sigma_data == 0.9 and resolved.method.teacher_objective == 'flow'
  assert resolved.method.init_from_teacher is True  # unset: a network teacher starts the student
  analytic = resolve_config(_config('distill_toy2d', 'diff_instruct'), get_dataset('ring8'))
  assert analytic.method.init_from_teacher is False


def test_init_from_a_flow_teacher_reads_the_generator_as_the_teacher_does(tmp_path):
  """A student started from a flow-matching teacher is the teacher's denoiser at sigma_init, read
  through the rectified-flow parameterisation (not as an EDM-preconditioned network)."""
  _mlp_export(tmp_path / 'flow', objective='flow')
  c = _config('distill_toy2d', 'diff_instruct')
  c.method.teacher = str(tmp_path / 'flow')
  c.method.init_from_teacher = True
  data = get_dataset('ring8')
  setup = build_method(resolve_config(c, data), data)
  params = setup.init_params(jax.random.PRNGKey(0))
  teacher = load_teacher(c.method.teacher)
  z = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
  student = [g for g in setup.generators if g.model == 'student'][0]
  x = student.sample_fn(params, jax.random.PRNGKey(1), 16, None)
  expected = teacher.denoise(teacher.params, 2.5 * z, jnp.full((16,), 2.5))
  np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-6)


def test_init_from_the_bundled_unet_teacher_uses_its_sigma_data():
  data = get_dataset('digits')
  c = _config('distill_digits', 'diff_instruct')
  resolved = resolve_config(c, data)
  assert resolved.method.sigma_data == 0.5  # the teacher's, not the data's std (about 0.75)
  params = build_method(resolved, data).init_params(jax.random.PRNGKey(0))
  for name in ('generator', 'fake_score'):
    assert jax.tree.all(jax.tree.map(np.array_equal, params[name], params['teacher']))


def test_official_edm_checkpoint_teacher_reproduces_the_official_denoiser(fixtures_dir):
  """'edm:<file.npz>' reads an official EDM checkpoint (here a tiny DDPM++ one with random
  weights) and denoises exactly as the official network does."""
  with np.load(fixtures_dir / 'edm_ddpmpp_tiny.npz') as f:
    x = np.transpose(f['inputs/x'], (0, 2, 3, 1))
    sigma, labels = f['inputs/sigma'], f['inputs/class_labels']
    expected = np.transpose(f['outputs/D_without_augment_labels'], (0, 2, 3, 1))
  teacher = load_teacher(f'edm:{fixtures_dir / "edm_ddpmpp_tiny.npz"}')
  assert teacher.example_shape == (8, 8, 3) and teacher.num_classes == 10
  assert teacher.net.objective == 'edm' and teacher.network == 'song_unet'
  got = teacher.denoise(teacher.params, jnp.asarray(x), jnp.asarray(sigma), jnp.asarray(labels))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
