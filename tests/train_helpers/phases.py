"""Each phase of a method alone, in tests: its gradients, and its steps through the trainer."""
import jax
import numpy as np

from onestep_jax.train import spec
from onestep_jax.train.trainer import Trainer


def groups_changed_by_each_phase(setup, data, params, *, batch_size=32, num_steps=2):
  """{phase name: names of the parameter groups that `num_steps` trainer steps of that phase
  alone changed}, each phase started from the same `params`."""
  batch = lambda step, pi, pc: data.get_batch(step, batch_size, seed=0, process_index=pi,
                                              process_count=pc)
  def trained(schedule, num_steps=num_steps):
    """The trainable groups after `num_steps` steps of the phases `schedule`, once each."""
    trainer = Trainer(groups=setup.groups, phases=setup.phases,
                      stages=(spec.Stage(tuple((name, 1) for name in schedule)),),
                      batch_size=batch_size)
    state = trainer.init_state(params, key=jax.random.PRNGKey(1))
    return jax.device_get(trainer.train(state, get_batch=batch, num_steps=num_steps,
                                        log_every=1, progress=False).params)

  changed = {}
  for phase in setup.phases:
    if phase.takes is None:
      after = trained((phase.name,))
      before = {name: jax.device_get(params[name]) for name in after}
    else:  # it runs after its giver: one step of both against its giver alone, the same draws
      before, after = trained((phase.takes,), 1), trained((phase.takes, phase.name), 1)
    changed[phase.name] = {name for name in after if any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[name]),
                                                 jax.tree.leaves(after[name])))}
  return changed


def group_norms(tree) -> dict:
  """{group name: squared norm of its leaves} of a tree of parameter groups."""
  return {name: float(sum(np.sum(np.square(l)) for l in jax.tree.leaves(sub)))
          for name, sub in tree.items()}


def check_phase_gradients(setup, params, batch) -> dict:
  """Asserts that each phase's metrics are finite, that its gradient moves every group it
  updates, and that no phase but the generator's moves the generator (its samples are
  stop-gradient there); returns {phase name: its metrics}."""
  out, handed = {}, {}
  for phase in setup.phases:  # a phase that gives comes before the phase that takes from it
    def loss_fn(p, phase=phase):
      taken = () if phase.takes is None else (handed[phase.takes],)
      loss, metrics, *given = phase.loss_fn(p, batch, jax.random.PRNGKey(2), *taken)
      return loss, (metrics, given)
    grads, (metrics, given) = jax.jit(jax.grad(loss_fn, has_aux=True))(params)
    if phase.gives:
      handed[phase.name] = given[0]
    assert all(np.isfinite(float(v)) for v in metrics.values()), (phase.name, metrics)
    norms = group_norms(grads)
    for group in phase.updates:
      assert 0 < norms[group] < np.inf, (phase.name, group, norms)
    if phase.name != 'generator':
      assert norms['generator'] == 0.0, (phase.name, norms)
    out[phase.name] = metrics
  return out
