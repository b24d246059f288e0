"""The smallest versions of the shipped configs that the method tests build."""
import pathlib

from onestep_jax.experiment.overrides import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(file: str, method: str, **method_fields):
  """configs/<file>.py:<method> with a one-layer MLP of width 16 (and discriminator head), batch
  32 and `method_fields` set on config.method."""
  c = load_config_file(f'{ROOT}/configs/{file}.py:{method}')
  c.net.kwargs.hidden_dim = 16
  c.net.kwargs.num_layers = 1
  c.train.batch_size = 32
  if 'discriminator_width' in c.method:
    c.method.discriminator_width = 16
  c.method.update(method_fields)
  return c
