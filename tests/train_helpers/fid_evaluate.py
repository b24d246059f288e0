"""A tiny digits teacher through `run`: training whose final Inception evaluation is interrupted
at a batch, `--mode=evaluate` resuming it, and the same generator evaluated in one go; prints
the JSON of the batches each drew and their scores. A fresh process with the persistent
compilation cache in a temporary directory, so that the second run reuses the first's programs.

  fid_evaluate.py WORKDIR
"""
import json
import os
import pathlib
import signal
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHAPE = (8, 8, 1)  # digits
NUM, BATCH, SAVE_EVERY, KEEP = 50, 8, 2, 20  # 7 batches (the last holds 2); saves after 2, 4, 6, 7
FAIL_AT = 5  # the batch the interrupted evaluation stops at: it resumes from the save after 4


class Interrupted(Exception):
  pass


def config(**inception):
  """The digits teacher at its smallest, its evaluation on a tiny feature network."""
  from onestep_jax.experiment.overrides import load_config_file
  c = load_config_file(f'{ROOT}/configs/teacher_digits.py')
  c.net.kwargs.model_channels = 8
  c.net.kwargs.channel_mult = (1,)
  c.net.kwargs.attn_resolutions = ()
  c.method.sample_steps = 1  # NFE 1: the smallest sampler to compile
  c.train.num_steps = 0  # a checkpoint of the initial parameters is enough
  c.train.compilation_cache = False  # the driver sets its own
  c.eval.num_samples = 8
  c.eval.batch_size = 8
  c.eval.feature_extractor = 'tiny'  # replaced by the tiny network
  c.eval.inception.num_samples = NUM
  c.eval.inception.batch_size = BATCH
  c.eval.inception.pr_num_samples = KEEP
  c.eval.inception.save_every = SAVE_EVERY
  c.eval.inception.update(inception)
  return c


def patch(seen):
  """Tiny feature network; generator batches recorded in seen['batches'], Interrupted raised
  at batch seen['fail_at'], and SIGTERM sent to this process while drawing batch
  seen['sigterm_at'] (if set)."""
  from onestep_jax.experiment import inception_evaluation
  from train_helpers import fid_stream
  real = inception_evaluation.generator_images

  def counting(g, params, **kwargs):
    seen['generator'], seen['params'] = g, params
    images = real(g, params, **kwargs)

    def counted(i):
      if i == seen['fail_at']:
        raise Interrupted(i)
      if i == seen.get('sigterm_at'):
        os.kill(os.getpid(), signal.SIGTERM)
      seen['batches'].append(i)
      return images(i)

    return counted

  inception_evaluation.inception_network = lambda path: fid_stream.tiny_network(SHAPE)
  inception_evaluation.generator_images = counting


def main():
  workdir = pathlib.Path(sys.argv[1])
  from onestep_jax.train.compilation_cache import enable_compilation_cache
  enable_compilation_cache(workdir / 'xla_cache')
  from onestep_jax.data import get_dataset
  from onestep_jax.experiment import inception_evaluation
  from onestep_jax.experiment.runner import run
  seen = {'batches': [], 'fail_at': FAIL_AT}
  patch(seen)
  out = {}
  try:
    run(config(), str(workdir / 'run'), progress=False)
  except Interrupted:
    out['interrupted'] = list(seen['batches'])
  seen['batches'], seen['fail_at'] = [], None
  out['resumed'] = run(config(), str(workdir / 'run'), mode='evaluate', progress=False)
  out['resumed_batches'] = list(seen['batches'])
  seen['batches'] = []
  out['straight'] = inception_evaluation.evaluate(
      config=config(), dataset=get_dataset('digits'), generators=(seen['generator'],),
      params=seen['params'], workdir=str(workdir / 'straight'), run_identity='straight',
      progress=False)
  out['straight_batches'] = list(seen['batches'])
  print(json.dumps(out))


if __name__ == '__main__':
  main()
