"""benchmarks/official_side_by_side.py: the pairing of the official processes with ours, and its
errors for bad input (the official code itself runs under PyTorch, outside this suite)."""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'))
import official_side_by_side  # noqa: E402


def _write(path, payload):
  path.write_text(json.dumps(payload))


def test_summary_pairs_each_round_and_writes_the_ratios(tmp_path):
  for round_, (official, ours) in enumerate([(0.20, 0.22), (0.25, 0.20)]):
    _write(tmp_path / f'official_edm_{round_}.json',
           {'step_s': official, 'matmul_s': 0.05, 'peak_rss_mb': 570.0})
    _write(tmp_path / f'ours_edm_{round_}.json', {'edm_reference_32x32': {
        'step_s': ours, 'matmul_s': 0.06, 'peak_rss_mb': 700.0}, '_measured': {}})
  _write(tmp_path / 'official_sid_0.json', {'step_s': 0.8, 'matmul_s': 0.05, 'peak_rss_mb': 900.0})
  _write(tmp_path / 'ours_sid_0.json', {'sid': {'step_s': 0.9, 'matmul_s': 0.06,
                                                'peak_rss_mb': 1000.0}})
  _write(tmp_path / 'parent_sid_0.json', {'sid': {'step_s': 1.0, 'matmul_s': 0.06,
                                                  'peak_rss_mb': 1100.0}})
  summary = official_side_by_side.summarize(str(tmp_path))
  assert [r['ratio'] for r in summary['edm']] == pytest.approx([1.1, 0.8])
  assert 'parent_ratio' not in summary['edm'][0]
  assert summary['sid'][0]['ratio'] == pytest.approx(1.125)
  assert summary['sid'][0]['parent_ratio'] == pytest.approx(1.25)
  assert json.loads((tmp_path / 'summary.json').read_text()) == summary


def test_summary_needs_our_side_of_every_round(tmp_path):
  _write(tmp_path / 'official_dmd2_1.json', {'step_s': 0.6, 'matmul_s': 0.05, 'peak_rss_mb': 1.0})
  with pytest.raises(FileNotFoundError, match='ours_dmd2_1.json'):
    official_side_by_side.summarize(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='no official'):
    official_side_by_side.summarize(str(tmp_path / 'empty'))


@pytest.mark.parametrize('argv, message', [
    ([], '--row and --repo are needed'),
    (['--row=sid', '--repo=.'], 'has no training/sid_loss.py'),
    (['--row=edm', '--repo=.', '--steps=0'], '--steps must be at least 1'),
    (['--summary=/no/such/directory'], 'no official_<row>_<round>.json in /no/such/directory')])
def test_bad_arguments_are_errors(monkeypatch, capsys, argv, message):
  monkeypatch.setattr(sys, 'argv', ['official_side_by_side.py'] + argv)
  with pytest.raises(SystemExit):
    official_side_by_side.main()
  assert message in capsys.readouterr().err


def test_summary_pairs_the_passes_with_network_passes_json(tmp_path):
  _write(tmp_path / 'official_passes_1.json', {
      'forward': {'ms': 90.0}, 'input_gradient': {'ms': 200.0}, 'full_gradient': {'ms': 250.0},
      'matmul_s': 0.05})
  _write(tmp_path / 'ours_passes_1.json', {
      'forward': {'ms': 72.0}, 'input_gradient': {'ms': 220.0}, 'full_gradient': {'ms': 250.0},
      '_measured': {}})
  passes, = official_side_by_side.summarize(str(tmp_path))['passes']
  ratios = [passes[n]['ratio'] for n in official_side_by_side.PASSES]
  assert ratios == pytest.approx([0.8, 1.1, 1.0])
