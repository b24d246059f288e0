"""One-step distillation on a 2-D toy distribution with its exact (analytic) teacher.

python experiments/main.py --config=configs/distill_toy2d.py:diff_instruct --workdir=runs/di
Variants: `<method>` or `<method>,<toy>` (default toy: ring8). Methods: diff_instruct.
Set --config.method.teacher=<export dir> to distil a trained teacher instead.
"""
from onestep_jax.experiment.defaults import base_config, edm_method_fields

METHOD_VARIANTS = ('diff_instruct',)


def get_config(arg: str = 'diff_instruct'):
  method, _, toy = arg.partition(',')
  if method not in METHOD_VARIANTS:
    raise ValueError(f'unknown variant {method!r}; valid: {list(METHOD_VARIANTS)}')
  c = base_config()
  c.data.name = toy or 'ring8'

  c.net.name = 'mlp'  # generator and fake score share this architecture
  c.net.kwargs.data_dim = 2
  c.net.kwargs.hidden_dim = 256
  c.net.kwargs.num_layers = 3

  m = c.method
  m.name = method
  m.teacher = 'analytic'  # 'analytic' (the data's exact mixture) or an exported teacher dir
  m.init_from_teacher = False  # start generator and fake score from the teacher's weights
  edm_method_fields(m)
  m.beta1 = 0.0  # Adam beta1 = 0 as in Diff-Instruct / SiD
  m.sigma_init = 2.5  # generator G(z) = D(sigma_init z, sigma_init)
  m.lr_generator = 1e-4  # generator learning rate
  m.lr_fake_score = 1e-3  # fake-score learning rate
  m.fake_score_steps = 1  # fake-score updates per generator update
  m.fake_score_warmup_steps = 300  # steps training only the fake score at the start
  m.ema_halflife_nimg = 20_000.0  # EMA half-life of the generator in samples
  m.teacher_sample_steps = 18  # Heun steps for the teacher's own samples (NFE 35)

  c.train.batch_size = 512
  c.train.num_steps = 3000
  c.train.save_every = 500
  return c
