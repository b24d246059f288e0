"""Running each phase of a method alone through the trainer, in tests."""
import jax
import numpy as np

from onestep_jax.train import spec
from onestep_jax.train.trainer import Trainer


def groups_changed_by_each_phase(setup, data, params, *, batch_size=32, num_steps=2):
  """{phase name: names of the parameter groups that `num_steps` trainer steps of that phase
  alone changed}, each phase started from the same `params`."""
  batch = lambda step, pi, pc: data.get_batch(step, batch_size, seed=0, process_index=pi,
                                              process_count=pc)
  changed = {}
  for phase in setup.phases:
    trainer = Trainer(groups=setup.groups, phases=setup.phases,
                      stages=(spec.Stage(((phase.name, 1),)),), batch_size=batch_size)
    state = trainer.init_state(params, key=jax.random.PRNGKey(1))
    before = jax.device_get(state.params)
    after = jax.device_get(trainer.train(state, get_batch=batch, num_steps=num_steps,
                                         log_every=1, progress=False).params)
    changed[phase.name] = {name for name in after if any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[name]),
                                                 jax.tree.leaves(after[name])))}
  return changed
