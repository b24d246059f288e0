"""README's code examples run as written."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def _block(marker):
  blocks = re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.S)
  found = [b for b in blocks if b.startswith(marker)]
  assert len(found) == 1, f'README has {len(found)} python blocks starting with {marker!r}'
  return found[0]


def test_readme_loss_example_runs(capsys):
  exec(compile(_block('# One-step distillation losses'), 'README.md', 'exec'), {})
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 4
  values = [float(l.split()[-1]) for l in lines]
  assert all(np.isfinite(v) for v in values), lines
  # DMD's gradient is Diff-Instruct's rescaled per example by a positive normaliser.
  assert values[0] * values[1] > 0, lines
