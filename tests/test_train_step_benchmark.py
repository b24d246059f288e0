"""benchmarks/train_step.py end to end on the 2-D teacher: the step, per phase too, in a fresh
process, written as JSON (the benchmarks call the trainer's phases as it does); and
memory_breakdown.py's check of its row."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_toy_teacher_step_is_timed_per_phase_in_a_child_process(tmp_path):
  out = tmp_path / 'train_step.json'
  run = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'train_step.py'),
                        '--only=teacher_toy2d:ring8', '--repeats=1', '--steps=2', '--warmup=1',
                        '--per_phase', f'--out={out}'], capture_output=True, text=True,
                       timeout=600, env={**os.environ, 'ONESTEP_JAX_MALLOC': 'system'})
  assert run.returncode == 0, run.stderr[-2000:]
  row = json.loads(out.read_text())['teacher_toy2d:ring8']
  assert row['step_s'] > 0 and row['peak_rss_mb'] > 0
  assert set(row['phase_s']) == {'denoise'} and row['phase_s']['denoise'] > 0


def test_memory_breakdown_rejects_an_unknown_row_with_a_usage_error(tmp_path):
  out = tmp_path / 'memory.json'
  run = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'memory_breakdown.py'),
                        '--row=foo', f'--out={out}'], capture_output=True, text=True, timeout=120)
  assert run.returncode == 2
  assert "unknown iteration 'foo'" in run.stderr and 'edm_reference_32x32' in run.stderr
  assert 'Traceback' not in run.stderr and not out.exists()


def test_a_phase_taking_handed_over_samples_is_timed_after_its_giver(monkeypatch):
  """The benchmarks' per-phase timing runs a phase that takes (DMD2 reusing its samples: the
  fake-score update on the generator's) with what its giver handed over."""
  monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
  import step_timing
  from onestep_jax.experiment.overrides import load_config_file
  config = load_config_file(str(ROOT / 'configs' / 'distill_toy2d.py') + ':dmd2')
  config.method.update(reuse_generator_samples=True, fake_score_warmup_steps=2)
  config.train.compilation_cache = False
  row = step_timing.measure(config, steps=2, warmup=1, per_phase=True)
  assert [list(p) for p in row['schedule'][-1]] == [['generator', 1],
                                                    ['fake_score_from_generator', 1]]
  assert set(row['phase_s']) == {'generator', 'fake_score_from_generator'}
  assert all(t > 0 for t in row['phase_s'].values())


def test_distillation_rows_take_each_method_s_own_sample_reuse_unless_a_variant_sets_it(
    monkeypatch, tmp_path):
  """benchmarks/distill_step.py: `dmd2` hands its samples over (its default, the official loop),
  `dmd2:twice` draws twice, `sid` draws twice and `sid:reuse` hands over."""
  monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
  from distill_step import distill_config
  reuse = {name: distill_config(name, str(tmp_path))[0].method.reuse_generator_samples
           for name in ('dmd2', 'dmd2:twice', 'sid', 'sid:reuse', 'sid:shared')}
  assert reuse == {'dmd2': True, 'dmd2:twice': False, 'sid': False, 'sid:reuse': True,
                   'sid:shared': True}
