"""Train a diffusion teacher (MLP) on a 2-D toy distribution or a user .npy file.

python experiments/main.py --config=configs/teacher_toy2d.py:ring8 --workdir=runs/ring8
Variants: any 2-D toy name (ring8, grid25, two_modes_imbalanced, checkerboard, moons, swiss_roll,
spiral), `<toy>,flow` for flow matching, or the path of a .npy file of points [N, D].
"""
from onestep_jax.experiment.defaults import base_config, teacher_method_fields


def get_config(arg: str = 'ring8'):
  name, _, objective = arg.partition(',')
  c = base_config()
  if name.endswith('.npy') or name.endswith('.npz'):
    c.data.name = 'arrays'
    c.data.kwargs.path = name
  else:
    c.data.name = name

  c.net.name = 'mlp'
  c.net.kwargs.data_dim = 2  # set from the data at start-up for .npy files
  c.net.kwargs.hidden_dim = 256
  c.net.kwargs.num_layers = 3

  m = c.method
  teacher_method_fields(m)
  m.objective = objective or 'edm'
  m.lr = 2e-3
  m.lr_rampup_steps = 200
  m.ema_halflife_nimg = 50_000.0

  c.train.batch_size = 512
  c.train.num_steps = 4000
  c.train.save_every = 500
  return c
