"""One command trains the MDLM teacher and then distils it with SDTT (configs/sdtt_markov.py
without a teacher); both stages resume exactly after SIGKILL, like the continuous methods."""
import json
import os
import subprocess
import sys

import pytest

from onestep_jax.train.export import load_exported
from test_discrete_mdlm import ROOT
from train_helpers.processes import kill_after_checkpoint

# A tiny one-command run: a teacher (one 16-wide block, 300 steps), then SDTT rounds of 150 steps
# from 8 to 4 and from 4 to 2 sampling steps.
TINY = {
    'data.kwargs.vocab_size': 4, 'data.kwargs.length': 8,
    'teacher_run.data.kwargs.vocab_size': 4, 'teacher_run.data.kwargs.length': 8,
    'teacher_run.net.kwargs.hidden_size': 16, 'teacher_run.net.kwargs.cond_dim': 8,
    'teacher_run.net.kwargs.n_heads': 2, 'teacher_run.net.kwargs.n_blocks': 1,
    'teacher_run.method.sample_steps': (4,), 'teacher_run.train.batch_size': 16,
    'teacher_run.eval.num_samples': 40, 'teacher_run.eval.batch_size': 20,
    'method.base_steps': 8, 'method.min_steps': 2, 'method.sample_steps': (2,),
    'train.batch_size': 16, 'eval.num_samples': 40, 'eval.batch_size': 20,
    'teacher_run.train.num_steps': 300, 'teacher_run.train.save_every': 50,
    'teacher_run.train.log_every': 50, 'method.round_steps': 150, 'train.num_steps': 300,
    'train.save_every': 50, 'train.log_every': 50,
}


def without_timings(metrics):
  return {k: v for k, v in metrics.items() if 'time' not in k and 'per_s' not in k}


def _cli(workdir):
  return [sys.executable, str(ROOT / 'experiments' / 'main.py'),
          f'--config={ROOT}/configs/sdtt_markov.py', f'--workdir={workdir}', '--progress=false',
          *(f'--config.{k}={v}' for k, v in TINY.items())]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(directory of the runs, environment): an uninterrupted one-command run in <dir>/ref.

  Every run here has a private HOME, so the JAX compilation cache the runs share
  (~/.cache/onestep_jax) is warm after the first one and is no one else's.
  """
  root = tmp_path_factory.mktemp('one_command')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'HOME': str(root / 'home')}
  subprocess.run(_cli(root / 'ref'), check=True, capture_output=True, env=env, timeout=1800)
  return root, env


def test_one_command_trains_the_teacher_then_every_round(runs):
  ref = runs[0] / 'ref'
  teacher = json.loads((ref / 'teacher' / 'metrics.json').read_text())
  metrics = json.loads((ref / 'metrics.json').read_text())
  assert {'teacher/sample_nll@4', 'teacher/entropy@4', 'teacher/nelbo'} <= set(teacher)
  for model in ('teacher', 'student'):
    assert {f'{model}/sample_nll@2', f'{model}/entropy@2', f'{model}/nelbo'} <= set(metrics)
  # The student distils the teacher trained in <workdir>/teacher: both runs report the same
  # NELBO for it (same network, held-out data and seed).
  assert metrics['teacher/nelbo'] == teacher['teacher/nelbo']
  assert json.loads((ref / 'config.json').read_text())['method']['teacher'] == str(
      ref / 'teacher')
  assert load_exported(ref / 'teacher' / 'export').metadata['method'] == 'mdlm'
  assert load_exported(ref / 'export').metadata['method'] == 'sdtt'
  assert '300' in os.listdir(ref / 'teacher' / 'checkpoints')
  assert '300' in os.listdir(ref / 'checkpoints')


def test_sigkill_in_either_stage_then_rerun_ends_with_the_same_metrics(runs):
  """Killed during teacher training and again during SDTT (before the promotion at step 150,
  which the resumed run crosses), the rerun ends exactly like an uninterrupted run, and does
  not touch the finished teacher."""
  root, env = runs
  killed = root / 'killed'
  kill_after_checkpoint(_cli(killed), checkpoints=killed / 'teacher' / 'checkpoints',
                        min_step=100, env=env, timeout=1800)
  assert '300' not in os.listdir(killed / 'teacher' / 'checkpoints')  # killed mid-training
  kill_after_checkpoint(_cli(killed), checkpoints=killed / 'checkpoints', min_step=100,
                        env=env, timeout=1800)
  assert '300' not in os.listdir(killed / 'checkpoints')
  finished_teacher = (killed / 'teacher' / 'metrics.json').stat().st_mtime_ns
  subprocess.run(_cli(killed), check=True, capture_output=True, env=env, timeout=1800)
  assert (killed / 'teacher' / 'metrics.json').stat().st_mtime_ns == finished_teacher
  for stage in ('teacher', '.'):
    ref, got = (json.loads((d / stage / 'metrics.json').read_text())
                for d in (root / 'ref', killed))
    assert without_timings(got) == without_timings(ref), stage
