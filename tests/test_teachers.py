"""Teachers for distillation: analytic, bundled and exported, with their identities."""
import jax
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.methods.teachers import load_teacher


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
  assert teacher.identity.startswith('exported:') and teacher.network == 'song_unet'


def test_analytic_teacher_identity_and_errors():
  ring = get_dataset('ring8')
  t = load_teacher('analytic', ring)
  assert t.identity == load_teacher('analytic', get_dataset('ring8')).identity
  assert t.identity != load_teacher('analytic', get_dataset('grid25')).identity
  with pytest.raises(ValueError, match='Gaussian-mixture'):
    load_teacher('analytic', get_dataset('moons'))
  with pytest.raises(ValueError, match='bundled'):
    load_teacher('bundled:nope', ring)
  with pytest.raises(FileNotFoundError, match='no/such/dir'):
    load_teacher('no/such/dir', ring)
