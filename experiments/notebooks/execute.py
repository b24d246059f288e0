"""Runs a notebook's code cells top to bottom in one namespace, without Jupyter.

  python experiments/notebooks/execute.py experiments/notebooks/compare_divergences.ipynb

With `--write`, stores each cell's printed text and its value (a matplotlib figure as a PNG, any
other value as text) as the cell's outputs, as Jupyter would. tests/test_notebooks.py runs the
notebooks this way in smoke mode (ONESTEP_NOTEBOOK_SMOKE=1).
"""
from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import io
import json
import os
import sys


class _Tee(io.StringIO):
  """Keeps what is printed and echoes it."""

  def write(self, s):
    sys.__stdout__.write(s)
    return super().write(s)


def _value_output(value, count: int):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  if isinstance(value, Figure):
    buf = io.BytesIO()
    value.savefig(buf, format='png', dpi=80, bbox_inches='tight')
    return {'output_type': 'display_data', 'metadata': {},
            'data': {'image/png': base64.b64encode(buf.getvalue()).decode('ascii'),
                     'text/plain': [repr(value)]}}
  return {'output_type': 'execute_result', 'execution_count': count, 'metadata': {},
          'data': {'text/plain': [repr(value)]}}


def run_notebook(path: str, *, write: bool = False) -> dict:
  """Executes the code cells of the notebook at `path` in one namespace and returns it; with
  `write`, saves their outputs into the notebook file."""
  os.environ.setdefault('MPLBACKEND', 'Agg')
  with open(path) as f:
    nb = json.load(f)
  namespace = {'__name__': '__main__'}
  count = 0
  for cell in nb['cells']:
    if cell['cell_type'] != 'code':
      continue
    count += 1
    tree = ast.parse(''.join(cell['source']))
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    printed = _Tee() if write else io.StringIO()
    with contextlib.redirect_stdout(printed):
      exec(compile(tree, f'<{os.path.basename(path)} cell {count}>', 'exec'), namespace)
      value = None
      if last is not None:
        value = eval(compile(ast.Expression(last.value), f'<cell {count}>', 'eval'), namespace)
    if write:
      outputs = []
      if printed.getvalue():
        outputs.append({'output_type': 'stream', 'name': 'stdout',
                        'text': printed.getvalue().splitlines(keepends=True)})
      if value is not None:
        outputs.append(_value_output(value, count))
      cell['outputs'], cell['execution_count'] = outputs, count
  if write:
    with open(path, 'w') as f:
      json.dump(nb, f, indent=1, ensure_ascii=False)
      f.write('\n')
  return namespace


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('notebook')
  parser.add_argument('--write', action='store_true', help='store the outputs in the notebook')
  args = parser.parse_args()
  run_notebook(args.notebook, write=args.write)


if __name__ == '__main__':
  main()
