"""Every name a benchmark script imports from another script of benchmarks/ or from onestep_jax
exists there, function-level imports included: the scripts run rarely, so a helper moved
elsewhere would otherwise break them unnoticed (temp_reuse.py imported `malloc_and_free` from
memory_breakdown.py for a session after it moved to onestep_jax.experiment.allocator)."""
import ast
import importlib
import importlib.util
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'
SCRIPTS = sorted(BENCHMARKS.glob('*.py'))


def _top_level_names(path: pathlib.Path) -> set[str]:
  """Names a module of benchmarks/ binds at its top level (without importing it)."""
  names = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split('.')[0] for a in node.names)
  return names


@pytest.mark.parametrize('script', SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_imported_names_exist(script):
  missing = []
  for node in ast.walk(ast.parse(script.read_text())):
    if not isinstance(node, ast.ImportFrom) or node.level or node.module is None:
      continue
    names = [a.name for a in node.names if a.name != '*']
    local = BENCHMARKS / f'{node.module}.py'
    if local.exists():
      missing += [f'{node.module}.{n}' for n in names if n not in _top_level_names(local)]
    elif node.module.split('.')[0] == 'onestep_jax':
      module = importlib.import_module(node.module)
      missing += [f'{node.module}.{n}' for n in names if not hasattr(module, n)
                  and importlib.util.find_spec(f'{node.module}.{n}') is None]
  assert not missing, f'{script.name} imports names that do not exist: {missing}'
