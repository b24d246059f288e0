"""Few-step flow maps trained from scratch, without a teacher, on a 2-D toy or a user's .npy data.

python experiments/main.py --config=configs/flowmap_toy2d.py:meanflow --workdir=runs/meanflow
Variants: `<method>` or `<method>,<toy or path.npy>` (default toy: ring8). Methods: meanflow
(arXiv 2505.13447), shortcut (arXiv 2410.12557). Students are evaluated at 1, 2, 4 and 8 steps
(student/<metric>@<steps>); on mixture toys the exact teacher is sampled beside them for
comparison (teacher/<metric>@35, method.reference; set it to None to skip). The distillation
methods (ayf_emd, ayf_lmd, scd, rcm, cd, pd) are in configs/distill_toy2d.py.
"""
from onestep_jax.experiment.defaults import base_config
from onestep_jax.methods.flow_map_config import TEACHER_FREE_METHODS, flow_map_training_fields


def get_config(arg: str = 'meanflow'):
  method, _, data = arg.partition(',')
  if method not in TEACHER_FREE_METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {sorted(TEACHER_FREE_METHODS)} '
                     '(distillation methods: configs/distill_toy2d.py)')
  c = base_config()
  flow_map_training_fields(c.method, method)
  if data.endswith('.npy') or data.endswith('.npz'):
    c.data.name = 'arrays'
    c.data.kwargs.path = data
  else:
    c.data.name = data or 'ring8'
    c.method.reference = 'analytic'

  c.net.name = 'mlp'
  c.net.kwargs.data_dim = 2  # set from the data at start-up
  c.net.kwargs.hidden_dim = 256
  c.net.kwargs.num_layers = 3
  c.net.kwargs.noise_scale = 1.0  # a smooth time embedding: MeanFlow differentiates it in t

  c.train.batch_size = 512
  c.train.num_steps = 3000
  c.train.save_every = 500
  return c
