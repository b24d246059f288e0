"""The command line on 8 fake CPU devices and as 2 local processes ends with the metrics of a
1-device run.

These are the same computation up to the order of the gradient sums. Measured: the final
metrics differ from 1 device by at most 3.5e-4 relative (energy distance, a small difference
of large means) and 4e-7 elsewhere, while training one step less moves them by 2e-3 (swd) to
1e-1 (mmd). Hence rtol 1e-3, with atol 1e-6 for metrics near zero.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from train_helpers.processes import run_concurrently

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Enough for an unpaced 8-device run to fill XLA's CPU dispatch queues and hang (at step ~40).
STEPS = 200


def _cli(workdir, *extra):
  return [sys.executable, str(ROOT / 'experiments' / 'main.py'),
          '--config=' + str(ROOT / 'configs' / 'teacher_toy2d.py') + ':ring8',
          f'--workdir={workdir}', '--progress=false', '--config.train.compilation_cache=false',
          f'--config.train.num_steps={STEPS}', '--config.eval.num_samples=500', *extra]


def _env(devices=None):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  if devices:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _run(commands, env, timeout=400):
  run_concurrently(commands, env=env, timeout=timeout)


def _final_metrics(workdir):
  metrics = json.loads((workdir / 'metrics.json').read_text())
  return {k: v for k, v in metrics.items() if 'time' not in k and 'per_s' not in k}


def _assert_same_metrics(got, reference):
  assert sorted(got) == sorted(reference)
  for k in reference:
    np.testing.assert_allclose(got[k], reference[k], rtol=1e-3, atol=1e-6, err_msg=k)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one_device')
  _run([_cli(workdir)], _env())
  return _final_metrics(workdir)


def test_eight_devices_match_one_device(reference, tmp_path):
  _run([_cli(tmp_path)], _env(devices=8))
  _assert_same_metrics(_final_metrics(tmp_path), reference)


def test_two_processes_match_one_process(reference, tmp_path):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  _run([_cli(tmp_path, '--distributed', f'--coordinator_address=localhost:{port}',
             '--num_processes=2', f'--process_id={i}') for i in range(2)], _env())
  _assert_same_metrics(_final_metrics(tmp_path), reference)


@pytest.mark.parametrize('args, message', [
    (['--num_processes=2'], '--num_processes needs --distributed'),
    (['--distributed', '--num_processes=2'], 'error: --distributed: '),
])
def test_distributed_flag_errors_are_one_line(tmp_path, args, message):
  out = subprocess.run(_cli(tmp_path, *args), capture_output=True, text=True, env=_env(),
                       timeout=120)
  assert out.returncode != 0
  assert message in out.stderr and 'Traceback' not in out.stderr
