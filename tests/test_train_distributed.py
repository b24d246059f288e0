"""Device- and process-count independence of the trainer (8 fake devices, 2 processes)."""
import os
import pathlib
import socket
import sys

import jax
import numpy as np
import pytest

from onestep_jax.train.checkpoint import Checkpointer
from onestep_jax.train.export import load_exported
from train_helpers import toy
from train_helpers.processes import run_concurrently

SCRIPT = pathlib.Path(__file__).parent / 'train_helpers' / 'run_toy.py'
STEPS = 4  # crosses the stage switch at step 2.


def _run(args, timeout=150):
  """Starts run_toy.py processes (one per args list) and waits for all, bounded in time."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  run_concurrently([[sys.executable, str(SCRIPT), *a] for a in args], env=env, timeout=timeout)


@pytest.fixture(scope='module')
def reference():
  """The same training on the single in-process device."""
  trainer = toy.make_trainer()
  state = trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(0))
  state = trainer.train(state, get_batch=toy.get_batch, num_steps=STEPS, log_every=1,
                        progress=False)
  return toy.flat_state(state, trainer)


def _assert_close(reference, results, prefix):
  keys = [k for k in results if k.startswith(prefix)]
  assert len(keys) == len(reference)
  for k in keys:
    np.testing.assert_allclose(results[k], reference[k[len(prefix):]], rtol=2e-5, atol=2e-6,
                               err_msg=k)


def test_eight_devices_match_one_device(reference, tmp_path):
  out = tmp_path / 'eight.npz'
  _run([['--out', str(out), '--devices', '8', '--fsdp', '1', '2', '--steps', str(STEPS)]])
  results = dict(np.load(out))
  _assert_close(reference, results, 'fsdp1')  # mesh data=8.
  _assert_close(reference, results, 'fsdp2')  # mesh data=4, fsdp=2 (params sharded).
  assert results["fsdp1['updates']['critic']"] == 2 + 2 * 3


def _port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_compiled_phases_load_on_eight_devices_and_two_processes(reference, tmp_path):
  """The executable cache on sharded meshes: a second run loads every phase (the script exits
  if one is traced) and trains as the reference does, with 8 devices and with 2 processes."""
  for layout in ('devices', 'processes'):
    cache = ['--executables', str(tmp_path / layout)]
    for name, loaded in (('first', []), ('second', ['--loaded'])):
      out = str(tmp_path / f'{layout}_{name}.npz')
      if layout == 'devices':
        _run([['--out', out, '--devices', '8', '--fsdp', '2', '--steps', str(STEPS), *cache,
               *loaded]])
      else:
        port = _port()
        _run([['--out', out, '--devices', '2', '--fsdp', '2', '--steps', str(STEPS),
               '--num-processes', '2', '--process-id', str(i), '--port', str(port), *cache,
               *loaded] for i in range(2)])
      _assert_close(reference, dict(np.load(out)), 'fsdp2')


def test_two_processes_match_one_process(reference, tmp_path):
  port = _port()
  out, ckpt, export = tmp_path / 'two.npz', tmp_path / 'ckpt', tmp_path / 'export'
  _run([['--out', str(out), '--devices', '2', '--fsdp', '2', '--steps', str(STEPS),
         '--num-processes', '2', '--process-id', str(i), '--port', str(port), '--ckpt',
         str(ckpt), '--export', str(export)] for i in range(2)])
  results = dict(np.load(out))
  # Mesh data=2 (one row per process, each feeding its half of the batch), fsdp=2 within each.
  _assert_close(reference, results, 'fsdp2')
  # Both processes call export_params (the fsdp-sharded EMA is gathered); process 0 writes.
  exported = load_exported(export)
  assert exported.net_kwargs == {'hidden': toy.HIDDEN}
  for name, value in exported.params.items():
    np.testing.assert_array_equal(value, results[f"fsdp2['ema']['generator']['{name}']"])
  # The fsdp=2 checkpoint, written jointly by the two processes, restores on one device, its
  # optimizer states (per leaf: fsdp_min_size=0 shards every leaf it can) packed.
  trainer = toy.make_trainer()
  template = trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(1))
  with Checkpointer(ckpt / 'fsdp2', teacher_identity='toy') as manager:
    assert manager.all_steps() == [STEPS]
    state = trainer.restore(manager, template)
    restored = toy.flat_state(state, trainer)
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(template.opt_state)
  _assert_close(restored, results, 'fsdp2')
