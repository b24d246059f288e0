"""benchmarks/conv_threads.py: every shape is timed fused and fenced, and bad counts are refused
before any process starts (tests/test_fusion_fence.py checks that both give the same values)."""
import subprocess
import sys

from train_helpers.scripts import ROOT, load_script

conv_threads = load_script('benchmarks/conv_threads.py')


def test_every_shape_is_timed_fused_and_fenced_with_unique_names():
  cases = conv_threads.cases()
  names = [conv_threads.case_name(*c) for c in cases]
  assert len(set(names)) == len(names)
  for cin, cout in conv_threads.SHAPES:
    assert (cin, cout, 'silu') in cases and (cin, cout, 'fenced') in cases
  assert {e for _, _, e in cases} == set(conv_threads.EPILOGUES)


def test_bad_counts_are_refused():
  out = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'conv_threads.py'),
                        '--repeats=0'], capture_output=True, text=True)
  assert out.returncode == 2
  assert '--repeats and --calls must be at least 1' in out.stderr
