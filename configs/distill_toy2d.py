"""One-step distillation on a 2-D toy (exact analytic teacher) or a user's .npy data.

python experiments/main.py --config=configs/distill_toy2d.py:sid --workdir=runs/sid
Variants: `<method>` or `<method>,<toy or path.npy>` (default toy: ring8). Methods: diff_instruct,
dmd, dmd2, sid, sim. Mixture toys use their exact teacher; other data need a trained teacher:
--config.method.teacher=<export dir of teacher_toy2d.py> (its network settings are used).
"""
from onestep_jax.experiment.defaults import base_config, one_step_method_fields


def get_config(arg: str = 'diff_instruct'):
  method, _, data = arg.partition(',')
  c = base_config()
  if data.endswith('.npy') or data.endswith('.npz'):
    c.data.name = 'arrays'
    c.data.kwargs.path = data
  else:
    c.data.name = data or 'ring8'

  c.net.name = 'mlp'  # generator and fake score (a network teacher's settings replace these)
  c.net.kwargs.data_dim = 2  # set from the data at start-up
  c.net.kwargs.hidden_dim = 256
  c.net.kwargs.num_layers = 3

  one_step_method_fields(c.method, method)

  c.train.batch_size = 512
  c.train.num_steps = 3000
  c.train.save_every = 500
  return c
