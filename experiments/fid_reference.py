"""Reference statistics for FID: FID Inception-v3 pool3 mean and covariance of a dataset.

  python experiments/fid_reference.py --data=tfds:cifar10 --splits=train,test \
      --weights=pt_inception-2015-12-05.npz --out=refs/cifar10-{split}.npz

Any dataset of the registry works (tfds:<name>, image_folder, arrays for .npy/.npz, the bundled
sets; --data_kwargs passes its arguments as JSON). Each split's file holds 'mu' and 'sigma'
(float64, the layout of EDM's published reference files, which `--config.eval.inception.reference`
also reads), 'count', 'features' (pool3 of the first --pr_num_samples images of a fixed shuffle,
for precision/recall) and 'source' (JSON: what was measured). Images go through the
conventions of onestep_jax/eval/fid_pipeline.py. All devices are used; add --distributed for
several processes.
"""
import json
import os
import sys

from absl import app, flags, logging

from onestep_jax.experiment.allocator import reexec_with_tcmalloc
from onestep_jax.experiment.cli import define_distributed_flags, initialize_distributed

flags.DEFINE_string('data', None, 'dataset name (onestep_jax.data registry, e.g. tfds:cifar10)')
flags.DEFINE_string('data_kwargs', '{}', 'JSON object of the dataset\'s arguments')
flags.DEFINE_list('splits', [], 'splits to measure, each passed as the split argument (empty: '
                  'the dataset as given)')
flags.DEFINE_string('weights', None, 'pytorch-fid Inception-v3 weights (.npz, or .pth with torch)')
flags.DEFINE_string('out', None, 'output .npz; with several splits it must contain {split}')
flags.DEFINE_integer('num_samples', 0, 'examples per split (0: all of them)')
flags.DEFINE_integer('batch_size', 512, 'global images per batch (a multiple of the devices)')
flags.DEFINE_integer('pr_num_samples', 10_000, 'features kept for precision/recall')
flags.DEFINE_bool('progress', True, 'show a progress bar')
define_distributed_flags()
flags.mark_flags_as_required(['data', 'weights', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  if len(f.splits) > 1 and '{split}' not in f.out:
    raise app.UsageError(f'--out={f.out} must contain {{split}} to write {len(f.splits)} splits')
  try:
    kwargs = json.loads(f.data_kwargs)
  except json.JSONDecodeError as e:
    raise app.UsageError(f'--data_kwargs is not JSON: {e}') from None
  error = initialize_distributed()
  if error:
    print(error, file=sys.stderr)
    return 2
  import jax  # pylint: disable=g-import-not-at-top
  from onestep_jax.data import get_dataset  # pylint: disable=g-import-not-at-top
  from onestep_jax.eval.fid_pipeline import inception_network, save_reference
  from onestep_jax.experiment.inception_evaluation import reference_statistics

  try:
    network = inception_network(f.weights)
    for split in f.splits or [None]:
      data_kwargs = dict(kwargs) if split is None else {**kwargs, 'split': split}
      dataset = get_dataset(f.data, **data_kwargs)
      acc = reference_statistics(dataset, network, batch_size=f.batch_size,
                                 keep=f.pr_num_samples, num_samples=f.num_samples or None,
                                 progress=f.progress)
      path = f.out.format(split=split)
      if jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_reference(path, acc, source={'data': f.data, 'kwargs': data_kwargs,
                                          'network': network.identity, 'keep': f.pr_num_samples})
        score, std = acc.inception_score.result()
        print(f'wrote {path}: {acc.count} images, Inception Score {score:.4f} +- {std:.4f}')
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  reexec_with_tcmalloc()
  app.run(main)
