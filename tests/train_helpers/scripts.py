"""Loading a script of benchmarks/ or experiments/ (not a package) as a module in tests."""
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_script(relative_path: str):
  """The module of ROOT / `relative_path`, run with its own folder on sys.path (so that it can
  import its neighbours, as when it is run as a script)."""
  path = ROOT / relative_path
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, str(path.parent))
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(path.parent))
  return module
