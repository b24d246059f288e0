"""Train a diffusion teacher (MLP) on a 2-D toy distribution or a user .npy file.

python experiments/main.py --config=configs/teacher_toy2d.py:ring8 --workdir=runs/ring8
Variants: any 2-D toy name (ring8, grid25, two_modes_imbalanced, checkerboard, moons, swiss_roll,
spiral) or the path of a .npy file of points [N, D], then options: `,flow` for flow matching,
`,cond` for a class-conditional teacher (ring8 with alternate modes in 2 classes, label dropout
0.1 for classifier-free guidance); e.g. `ring8,flow,cond`.
"""
from onestep_jax.experiment.defaults import base_config, teacher_method_fields


OPTIONS = ('flow', 'cond')


def get_config(arg: str = 'ring8'):
  name, *options = arg.split(',')
  if set(options) - set(OPTIONS):
    raise ValueError(f'unknown option(s) {sorted(set(options) - set(OPTIONS))} in {arg!r}; '
                     f'valid: {list(OPTIONS)}')
  c = base_config()
  if name.endswith('.npy') or name.endswith('.npz'):
    c.data.name = 'arrays'
    c.data.kwargs.path = name
  else:
    c.data.name = name
  if 'cond' in options:  # class-conditional, with label dropout for classifier-free guidance
    if name != 'ring8':
      raise ValueError(f"'cond' needs a labelled toy (ring8), got {name!r}")
    c.data.kwargs.num_classes = 2  # alternate modes
    c.data.conditional = True

  c.net.name = 'mlp'
  c.net.kwargs.data_dim = 2  # set from the data at start-up for .npy files
  c.net.kwargs.hidden_dim = 256
  c.net.kwargs.num_layers = 3
  if c.data.conditional:
    c.net.kwargs.label_dropout = 0.1

  m = c.method
  teacher_method_fields(m)
  m.objective = 'flow' if 'flow' in options else 'edm'
  m.lr = 2e-3
  m.lr_rampup_steps = 200
  m.ema_halflife_nimg = 50_000.0

  c.train.batch_size = 512
  c.train.num_steps = 4000
  c.train.save_every = 500
  return c
