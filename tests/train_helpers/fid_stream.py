"""A tiny feature network and generator for the streaming FID pipeline, and a script that runs
the pipeline on N devices / processes and saves its merged sums.

  fid_stream.py --out OUT [--devices N] [--num-processes P --process-id I --port PORT]
"""
import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

SHAPE = (4, 4, 3)  # image shape
FEATURES, CLASSES = 6, 5
NUM_SAMPLES, BATCH, KEEP = 50, 16, 20  # the last batch is cut (50 = 3 * 16 + 2)
DATA_ROWS = 45


def tiny_network(shape=SHAPE):
  """features = tanh of a random projection of u / 255; logits = 4 * features @ W."""
  import jax.numpy as jnp
  import numpy as np
  from onestep_jax.eval.fid_pipeline import FeatureNetwork

  rs = np.random.RandomState(0)
  variables = {'w': rs.randn(int(np.prod(shape)), FEATURES).astype(np.float32) / 4,
               'v': rs.randn(FEATURES, CLASSES).astype(np.float32)}

  def apply(v, images):
    x = images.astype(jnp.float32).reshape(images.shape[0], -1) / 255.0
    h = jnp.tanh(x @ v['w'] - 0.5 * jnp.sum(v['w'], 0))
    return h, 4.0 * h @ v['v']

  return FeatureNetwork(apply=apply, variables=variables, feature_dim=FEATURES,
                        num_classes=CLASSES, identity='tiny')


def tiny_generator(model='toy', nfe=1, shape=SHAPE):
  """Gaussian images of scale params['scale'], shifted by the first label when conditional."""
  import jax
  from onestep_jax.methods.base import Generator

  def sample_fn(params, key, num, labels):
    x = params['scale'] * jax.random.normal(key, (num,) + shape)
    if labels is not None:
      x = x + labels[:, :1, None, None]
    return x

  return Generator(model, nfe, sample_fn)


def data(directory):
  """An .npy of uint8 images read by the data registry ('arrays', split 'all')."""
  import numpy as np
  from onestep_jax.data import get_dataset
  path = pathlib.Path(directory) / 'images.npy'
  if not path.exists():  # every process writes the same file, atomically
    tmp = path.with_suffix(f'.{os.getpid()}.npy')
    np.save(tmp, np.random.RandomState(1).randint(0, 256, (DATA_ROWS,) + SHAPE, np.uint8))
    os.replace(tmp, path)
  return get_dataset('arrays', path=str(path), split='all')


def run(directory):
  """Generator and data statistics, merged over processes: {name: array}."""
  import numpy as np
  from onestep_jax.experiment import inception_evaluation as ie
  from onestep_jax.train.mesh import make_mesh

  mesh = make_mesh()
  network = tiny_network()
  images = ie.generator_images(tiny_generator(), {'scale': np.float32(0.6)}, seed=3,
                               batch_size=BATCH, num_classes=0, mesh=mesh)
  out = {}
  acc = ie.accumulate(images, network, num_samples=NUM_SAMPLES, batch_size=BATCH, mesh=mesh,
                      keep=KEEP)
  out.update({f'gen/{k}': v for k, v in acc.sums().items()})
  out['gen/kept'] = acc.features_of_kept()
  acc = ie.reference_statistics(data(directory), network, batch_size=BATCH, keep=KEEP,
                                mesh=mesh)
  out.update({f'data/{k}': v for k, v in acc.sums().items()})
  out['data/kept'] = acc.features_of_kept()
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', required=True)
  parser.add_argument('--devices', type=int, default=1)
  parser.add_argument('--num-processes', type=int, default=1)
  parser.add_argument('--process-id', type=int, default=0)
  parser.add_argument('--port', type=int, default=0)
  args = parser.parse_args()

  import jax
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_num_cpu_devices', args.devices)
  if args.num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'localhost:{args.port}',
                               num_processes=args.num_processes, process_id=args.process_id,
                               initialization_timeout=60)
  import numpy as np
  out = run(pathlib.Path(args.out).parent)
  assert jax.device_count() == args.devices * args.num_processes
  if jax.process_index() == 0:
    np.savez(args.out, **out)


if __name__ == '__main__':
  main()
