"""Training curves (curves.png, optional TensorBoard events), the sample and evaluate modes'
outputs, float32 preconditioning for bfloat16 networks, and the export format's home."""
import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from onestep_jax.diffusion.preconditioning import edm_coefficients, edm_denoiser
from onestep_jax.eval.plots import save_training_curves
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import run
from onestep_jax.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECORDS = [{'step': s, 'time': 0.0, 'fake/loss': 1.0 / s, 'fake/grad_norm/fake': 2.0,
            'gen/loss': -0.1 * s, 'gen/grad_norm/generator': float('nan') if s == 2 else 1.0,
            'steps_per_sec': 10.0} for s in range(1, 6)]


def test_curves_png_has_a_column_per_phase(tmp_path):
  save_training_curves(RECORDS, str(tmp_path / 'curves.png'))
  with Image.open(tmp_path / 'curves.png') as img:
    assert img.width > img.height  # two phase columns, two rows
  with pytest.raises(ValueError, match='no "<phase>/loss" values'):
    save_training_curves([{'step': 1, 'steps_per_sec': 3.0}], str(tmp_path / 'none.png'))


def test_curves_draw_each_windows_largest_gradient_norm_when_logged(tmp_path):
  with_max = [{**r, 'gen/grad_norm_max/generator': 5.0 + r['step']} for r in RECORDS]
  save_training_curves(with_max, str(tmp_path / 'max.png'))
  save_training_curves(RECORDS, str(tmp_path / 'plain.png'))
  with Image.open(tmp_path / 'max.png') as a, Image.open(tmp_path / 'plain.png') as b:
    assert a.size == b.size and not np.array_equal(np.asarray(a), np.asarray(b))


def test_metric_writer_without_clu_writes_only_jsonl(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'clu', None)  # import clu fails, as when it is not installed
  writer = metrics_lib.MetricWriter(tmp_path / 'metrics.jsonl', tensorboard_dir=str(tmp_path / 'tb'))
  writer.write(3, {'a/loss': 1.5})
  assert metrics_lib.read_metrics(tmp_path / 'metrics.jsonl')[0]['a/loss'] == 1.5
  assert not (tmp_path / 'tb').exists()


def test_metric_writer_writes_tensorboard_events_with_clu(tmp_path):
  pytest.importorskip('clu.metric_writers')
  writer = metrics_lib.MetricWriter(tmp_path / 'metrics.jsonl', tensorboard_dir=str(tmp_path / 'tb'))
  writer.write(3, {'a/loss': 1.5})
  assert any(p.name.startswith('events.out.tfevents') for p in (tmp_path / 'tb').iterdir())


def _config():
  c = load_config_file(f'{ROOT}/configs/teacher_toy2d.py:ring8')
  c.train.compilation_cache = False
  c.train.num_steps = 6
  c.train.batch_size = 32
  c.train.log_every = 2
  c.net.kwargs.hidden_dim = 16
  c.method.sample_steps = 2
  c.eval.num_samples = 200
  c.eval.batch_size = 200
  return c


def test_train_evaluate_and_sample_modes_write_what_they_say(tmp_path, capsys):
  wd = tmp_path / 'run'
  trained = run(_config(), str(wd), progress=False)
  assert (wd / 'curves.png').exists()
  assert 'teacher/off_mode@3' in trained and 'data/off_mode_floor' in trained
  os.remove(wd / 'curves.png')
  evaluated = run(_config(), str(wd), mode='evaluate', progress=False)
  assert (wd / 'curves.png').exists()
  for k in ('train_time_s', 'train_steps_per_s', 'init_time_s'):
    assert evaluated[k] == trained[k], k
  assert json.loads((wd / 'metrics.json').read_text())['train_time_s'] == trained['train_time_s']
  capsys.readouterr()
  run(_config(), str(wd), mode='sample', progress=False)
  printed = [l for l in capsys.readouterr().out.splitlines() if l.startswith('wrote ')]
  paths = sorted(l[len('wrote '):] for l in printed)
  assert paths == sorted(str(wd / f'samples_teacher_nfe3.{e}') for e in ('npy', 'png'))
  assert all(os.path.exists(p) for p in paths)


def test_preconditioning_is_float32_for_bfloat16_inputs():
  seen = {}

  def raw(x_in, c_noise, labels):
    seen.update(x_in=x_in, c_noise=c_noise)
    return jnp.ones_like(x_in)

  x = jnp.full((2, 3), 0.7, jnp.bfloat16)
  sigma = 0.002
  out = edm_denoiser(raw, sigma_data=0.5)(x, sigma)
  assert seen['c_noise'].dtype == jnp.float32 and out.dtype == jnp.bfloat16
  assert seen['x_in'].dtype == jnp.bfloat16
  np.testing.assert_allclose(seen['c_noise'], np.log(np.float32(sigma)) / 4, rtol=1e-6)
  c = edm_coefficients(np.float32(sigma), 0.5)
  x32 = np.float32(np.asarray(x, np.float32))
  np.testing.assert_array_equal(out, (c.c_skip * x32 + c.c_out).astype(jnp.bfloat16))
  assert edm_coefficients(jnp.bfloat16(1.0)).c_noise.dtype == jnp.float32


def test_classifier_module_does_not_import_the_trainer():
  code = ('import sys, onestep_jax.eval.classifier; '
          'print([m for m in sys.modules if m.startswith("onestep_jax.train")])')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       timeout=120, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.stdout.strip() == '[]'
