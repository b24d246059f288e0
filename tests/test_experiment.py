"""End-to-end runs through the experiment runner and the CLI: resume, outputs, bad input."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import run
from onestep_jax.train.export import load_exported

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(name, variant, **train):
  c = load_config_file(f'{ROOT}/configs/{name}.py:{variant}')
  c.train.compilation_cache = False
  c.train.log_every = 5
  c.eval.num_samples = 400
  c.eval.batch_size = 200
  c.net.kwargs.hidden_dim = 32
  for k, v in train.items():
    c.train[k] = v
  return c


def test_teacher_run_writes_outputs_and_resume_equals_uninterrupted(tmp_path):
  straight = run(_config('teacher_toy2d', 'ring8', num_steps=30, save_every=10),
                 str(tmp_path / 'a'), progress=False)
  run(_config('teacher_toy2d', 'ring8', num_steps=20, save_every=10), str(tmp_path / 'b'),
      progress=False)
  resumed = run(_config('teacher_toy2d', 'ring8', num_steps=30, save_every=10),
                str(tmp_path / 'b'), progress=False)
  for k in straight:
    if 'time' not in k and 'per_s' not in k:
      assert straight[k] == resumed[k], k
  a, b = load_exported(tmp_path / 'a' / 'export'), load_exported(tmp_path / 'b' / 'export')
  for x, y in zip(*(sorted(_leaves(e.params)) for e in (a, b))):
    np.testing.assert_array_equal(x[1], y[1])
  for name in ('config.json', 'metrics.json', 'metrics.jsonl', 'samples_teacher_nfe35.png'):
    assert (tmp_path / 'a' / name).exists(), name
  metrics = json.loads((tmp_path / 'a' / 'metrics.json').read_text())
  assert {'teacher/swd@35', 'data/swd_floor', 'teacher/mode_coverage@35'} <= set(metrics)
  steps = [json.loads(l)['step'] for l in (tmp_path / 'b' / 'metrics.jsonl').read_text().splitlines()]
  assert steps == sorted(set(steps)), 'resumed history repeats steps'
  assert a.metadata['sigma_data'] == pytest.approx(0.7071, abs=0.02)


def _leaves(tree, prefix=''):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _leaves(v, prefix + k + '/')
    else:
      yield prefix + k, v


def test_diff_instruct_run_reports_student_and_teacher(tmp_path):
  metrics = run(_config('distill_toy2d', 'diff_instruct', num_steps=12),
                str(tmp_path), progress=False)
  assert {'student/swd@1', 'teacher/swd@35', 'student/mode_coverage@1'} <= set(metrics)
  exported = load_exported(tmp_path / 'export')
  assert exported.metadata['sigma_init'] == 2.5


def test_bad_input_errors(tmp_path):
  c = _config('teacher_toy2d', 'ring8')
  c.method.name = 'nope'
  with pytest.raises(ValueError, match='valid methods'):
    run(c, str(tmp_path / 'x'), progress=False)
  c = _config('teacher_toy2d', 'no_such_toy')
  with pytest.raises(ValueError, match='ring8'):
    run(c, str(tmp_path / 'y'), progress=False)
  c = _config('teacher_toy2d', str(tmp_path / 'missing.npy'))
  with pytest.raises(FileNotFoundError, match='missing.npy'):
    run(c, str(tmp_path / 'z'), progress=False)
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    run(_config('teacher_toy2d', 'ring8'), str(tmp_path / 'fresh'), mode='evaluate',
        progress=False)
  assert not (tmp_path / 'fresh' / 'metrics.json').exists()
  for field, value in (('batch_size', 0), ('num_steps', -1)):
    c = _config('teacher_toy2d', 'ring8')
    c.train[field] = value
    with pytest.raises(ValueError, match=f'train.{field} must be >= '):
      run(c, str(tmp_path / field), progress=False)
    assert not (tmp_path / field).exists()


def _cli(workdir, *extra):
  return [sys.executable, str(ROOT / 'experiments' / 'main.py'),
          '--config=' + str(ROOT / 'configs' / 'teacher_toy2d.py') + ':ring8',
          f'--workdir={workdir}', '--progress=false', '--config.train.compilation_cache=false',
          '--config.net.kwargs.hidden_dim=32', '--config.eval.num_samples=300',
          '--config.eval.batch_size=300', *extra]


def test_cli_rejects_unknown_field_with_a_message(tmp_path):
  out = subprocess.run(_cli(tmp_path, '--config.train.bogus=1'), capture_output=True, text=True,
                       timeout=120)
  assert out.returncode != 0
  assert 'bogus' in out.stderr and 'Traceback' not in out.stderr


def test_cli_sigkill_then_rerun_ends_with_same_metrics(tmp_path):
  """A run killed with SIGKILL mid-way and rerun ends exactly like an uninterrupted one."""
  args = ('--config.train.num_steps=400', '--config.train.save_every=50',
          '--config.train.log_every=50')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  subprocess.run(_cli(tmp_path / 'ref', *args), check=True, capture_output=True, env=env,
                 timeout=300)
  proc = subprocess.Popen(_cli(tmp_path / 'kill', *args), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpts = tmp_path / 'kill' / 'checkpoints'
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if ckpts.exists() and any(p.name.isdigit() and int(p.name) >= 100 for p in ckpts.iterdir()):
      break
    time.sleep(0.05)
  assert proc.poll() is None, 'the run finished before it could be killed; make it longer'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / 'kill' / 'metrics.json').exists()
  subprocess.run(_cli(tmp_path / 'kill', *args), check=True, capture_output=True, env=env,
                 timeout=300)
  ref = json.loads((tmp_path / 'ref' / 'metrics.json').read_text())
  got = json.loads((tmp_path / 'kill' / 'metrics.json').read_text())
  assert {k: v for k, v in ref.items() if 'time' not in k and 'per_s' not in k} == {
      k: v for k, v in got.items() if 'time' not in k and 'per_s' not in k}


def test_cli_nonfinite_stop_policy_exits_with_a_message(tmp_path):
  out = subprocess.run(_cli(tmp_path, '--config.method.lr=1e38',
                            '--config.method.lr_rampup_steps=1',
                            '--config.train.nonfinite=stop', '--config.train.num_steps=100',
                            '--config.train.log_every=20'),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert 'Non-finite' in out.stderr and "phase 'denoise'" in out.stderr
  assert 'Traceback' not in out.stderr
  assert not (tmp_path / 'metrics.json').exists()
