"""Time, start-up and peak memory of one distillation iteration at the EDM reference setting.

  python benchmarks/distill_step.py [--methods=diff_instruct,sid,dmd2,dmd2:twice] [--repeats=3]
      [--steps=15] [--warmup=3] [--per_phase] [--parallel_compile]
      [--warm_start [--warm_repeats=3]] [--note=...]

One iteration = one fake-score update + one generator update (update ratio 1, no GAN head), with
generator, fake score and teacher the reference network of benchmarks/train_step.py (random
weights), batch 16, float32. Measured as in benchmarks/train_step.py: fresh processes
round-robin, medians over processes, every time also in units of a 2048^3 float32 matmul timed
in the same process. The official PyTorch code on this kind of machine: Diff-Instruct 0.886 s
per iteration (626 MB peak RSS; with an 87.8 ms matmul, 10.1 units), SiD 1.06 s (925 MB), DMD2
0.82 s (599 MB). A method runs with its own default of method.reuse_generator_samples (on for
DMD2, whose official loop has the fake-score update use the generator update's samples; off for
Diff-Instruct and SiD, whose official loops draw twice). `<method>:reuse` sets it: the generator's
phase hands its samples over to the fake-score update; `<method>:twice` clears it: the fake-score
update draws and generates its own; `<method>:shared` also sets method.share_fake_score_noise:
that update takes the generator loss's noise, and one fake-score forward pass serves both.
`--warm_start` also measures each method's cold and warm start as benchmarks/train_step.py does
(its warm processes load the teacher the cold one exported, as a resumed run would, instead of
initialising one).
Writes benchmarks/results/distill_step.json.
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402
from onestep_jax.experiment.allocator import reexec_with_tcmalloc  # noqa: E402
from train_step import edm_reference_config  # noqa: E402

METHODS = ('diff_instruct', 'sid', 'dmd2')
VARIANTS = ('', 'reuse', 'twice', 'shared')


def check_names(names) -> None:
  """Raises ValueError naming any of `names` that is not a method of METHODS, optionally with
  :reuse, :twice or :shared."""
  for name in names:
    method, _, variant = name.partition(':')
    if method not in METHODS or variant not in VARIANTS:
      raise ValueError(f'unknown iteration {name!r}; valid: {list(METHODS)}, each optionally '
                       ':reuse, :twice or :shared')


def distill_config(name: str, tmp: str):
  """(config, make_teacher) of `name` (a method, or `<method>:<variant>`) at the
  reference setting; make_teacher() exports the randomly initialised teacher the config reads,
  to `tmp`."""
  check_names([name])
  method, _, variant = name.partition(':')
  import jax
  from onestep_jax.experiment.defaults import one_step_method_fields
  from onestep_jax.methods.networks import build_network, init_network
  from onestep_jax.train.export import export_params

  c = edm_reference_config(tmp)
  kwargs = c.net.kwargs.to_dict()
  teacher = os.path.join(tmp, 'teacher')

  def make_teacher():
    params = init_network(build_network('song_unet', kwargs), jax.random.PRNGKey(0),
                          example_shape=(32, 32, 3), num_classes=10)
    export_params(teacher, params, net_kwargs=kwargs,
                  metadata={'network': 'song_unet', 'objective': 'edm', 'sigma_data': 0.5,
                            'num_classes': 10})

  one_step_method_fields(c.method, method)
  c.method.teacher = teacher
  c.method.init_from_teacher = True
  c.method.fake_score_warmup_steps = 0
  c.method.fake_score_steps = 1
  c.method.gan_weight_generator = c.method.gan_weight_discriminator = 0.0
  if variant:
    c.method.reuse_generator_samples = variant in ('reuse', 'shared')
  c.method.share_fake_score_noise = variant == 'shared'
  c.train.compilation_cache = False
  return c, make_teacher


def child(name: str, args) -> dict:
  """Benchmarks `name` (see distill_config) in this process; with `args.cache_dir`, with that
  persistent cache and executable cache, and the teacher kept there."""
  if args.cache_dir:
    from onestep_jax.train.compilation_cache import enable_compilation_cache
    enable_compilation_cache(args.cache_dir)
  with tempfile.TemporaryDirectory() as tmp:
    # the cold and warm processes' teacher at one path: it is in the config, so in the cache's key
    c, make_teacher = distill_config(name, args.cache_dir or tmp)
    c.train.parallel_compile = args.parallel_compile
    c.train.compilation_cache = bool(args.cache_dir)
    exported = os.path.exists(c.method.teacher)
    return step_timing.measure(c, steps=args.steps, warmup=args.warmup,
                               network_init=None if exported else make_teacher,
                               per_phase=args.per_phase, executable_cache_dir=args.cache_dir)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--methods', default=','.join(METHODS))
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes per method')
  parser.add_argument('--steps', type=int, default=15, help='timed iterations per process')
  parser.add_argument('--warmup', type=int, default=3, help='untimed iterations first (compile)')
  parser.add_argument('--per_phase', action='store_true', help='also time each phase alone')
  parser.add_argument('--parallel_compile', action='store_true',
                      help='compile the phases at once (train.parallel_compile)')
  parser.add_argument('--note', default='', help='recorded in the JSON (e.g. machine load)')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'distill_step.json'))
  step_timing.add_warm_start_flags(parser)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args)))
    return
  step_timing.check_warm_start_flags(parser, args)
  names = args.methods.split(',')
  try:
    check_names(names)
  except ValueError as e:
    parser.error(f'--methods: {e}')
  started = step_timing.machine()
  results = step_timing.time_in_children(__file__, names, args, what='iteration')
  if args.warm_start:
    results['_warm_start'] = {name: step_timing.warm_start(__file__, name, args)
                              for name in names}
  step_timing.write(args.out, results, started=started, repeats=args.repeats,
                    counts={'steps': args.steps, 'warmup': args.warmup}, note=args.note)


if __name__ == '__main__':
  reexec_with_tcmalloc()
  main()
