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


TINY_UNET = dict(img_resolution=8, in_channels=1, out_channels=1, model_channels=8,
                 channel_mult=(1,), num_blocks=1, attn_resolutions=(8,), dropout=0.0)


def export_tiny_unet(path) -> str:
  """Exports a random 8x8 SongUNet of TINY_UNET (attention included, so JVPs go through it) as an
  EDM teacher to `path`; returns the path as a string."""
  import jax
  from onestep_jax.methods.networks import build_network, init_network
  from onestep_jax.train.export import export_params
  params = init_network(build_network('song_unet', TINY_UNET), jax.random.PRNGKey(0),
                        example_shape=(8, 8, 1), num_classes=0)
  export_params(path, params, net_kwargs=TINY_UNET,
                metadata={'network': 'song_unet', 'objective': 'edm', 'sigma_data': 0.5,
                          'num_classes': 0})
  return str(path)


def shorten_image_run(c) -> None:
  """A digits flow-map config cut to 2 steps of batch 8, students sampled at 1 and 2 steps (4 and
  8 are the same code, compiled again), teacher at 3 NFE, 32 evaluation samples."""
  c.method.teacher_sample_steps = 2
  c.method.sample_steps = (1, 2)
  c.train.num_steps = 2
  c.train.batch_size = 8
  c.train.save_every = 2
  c.train.compilation_cache = False
  c.eval.num_samples = 32
  c.eval.batch_size = 32


def assert_finite_image_metrics(metrics: dict) -> None:
  """FID, KID, precision and recall of a shortened run's students (1 and 2 steps) and teacher
  (3 NFE) are all present and finite."""
  import numpy as np
  for steps in (1, 2):
    for name in ('fid', 'kid', 'precision', 'recall'):
      assert np.isfinite(metrics[f'student/{name}@{steps}']), (name, steps)
  assert np.isfinite(metrics['teacher/fid@3'])
