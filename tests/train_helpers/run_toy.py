"""Trains the toy problem in a fresh process and saves the final state as npz.

Used by tests/test_train_distributed.py and tests/test_train_checkpoint.py:
  run_toy.py --out OUT [--devices N] [--fsdp F] [--steps S]
             [--num-processes P --process-id I --port PORT] [--ckpt DIR/fsdp<F>] [--export DIR]
             [--marker FILE]   (write FILE when step 3 starts; used to time a SIGTERM)
             [--executables DIR [--loaded]]  (keep the compiled phases in DIR/fsdp<F>;
                                              --loaded: fail if a phase is traced)
"""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', required=True)
  parser.add_argument('--devices', type=int, default=1)
  parser.add_argument('--fsdp', type=int, nargs='+', default=[1])
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--num-processes', type=int, default=1)
  parser.add_argument('--process-id', type=int, default=0)
  parser.add_argument('--port', type=int, default=0)
  parser.add_argument('--ckpt', default=None)
  parser.add_argument('--export', default=None)
  parser.add_argument('--marker', default=None)
  parser.add_argument('--executables', default=None)
  parser.add_argument('--loaded', action='store_true')
  args = parser.parse_args()

  import jax
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_num_cpu_devices', args.devices)
  if args.num_processes > 1:
    jax.distributed.initialize(coordinator_address=f'localhost:{args.port}',
                               num_processes=args.num_processes, process_id=args.process_id,
                               initialization_timeout=60)
  import numpy as np
  from train_helpers import toy
  from onestep_jax.train.checkpoint import Checkpointer
  from onestep_jax.train.executable_cache import ExecutableCache
  from onestep_jax.train.export import export_params
  from onestep_jax.train.mesh import make_mesh

  def get_batch(step, process_index, process_count):
    if args.marker and step == 3:
      pathlib.Path(args.marker).touch()
    return toy.get_batch(step, process_index, process_count)

  results = {}
  for fsdp in args.fsdp:
    cache = (ExecutableCache(pathlib.Path(args.executables) / f'fsdp{fsdp}', key='toy')
             if args.executables else None)
    trainer = toy.make_trainer(mesh=make_mesh(fsdp=fsdp), fsdp_min_size=0, executable_cache=cache)
    if args.loaded:  # pylint: disable-next=protected-access
      trainer._lowered = lambda phase, _: sys.exit(f'traced {phase!r}')
    state = trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(0))
    ckpt = (Checkpointer(pathlib.Path(args.ckpt) / f'fsdp{fsdp}', teacher_identity='toy')
            if args.ckpt else None)
    try:
      state = trainer.train(state, get_batch=get_batch, num_steps=args.steps, checkpointer=ckpt,
                            log_every=1, progress=False)
    finally:
      if ckpt is not None:
        ckpt.close()
    if args.export:
      export_params(args.export, state.ema['generator'], net_kwargs={'hidden': toy.HIDDEN})
    gathered = jax.tree.map(
        lambda x: np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True)),
        toy.per_leaf_items(state, trainer))
    flat = jax.tree_util.tree_flatten_with_path(gathered)[0]
    results.update({f'fsdp{fsdp}{jax.tree_util.keystr(p)}': v for p, v in flat})
  if jax.process_index() == 0:
    np.savez(args.out, **results)


if __name__ == '__main__':
  main()
