"""The packed optimizer update: the same arithmetic as per leaf, its layout in checkpoints, and
runs recorded before it (per-leaf optimizer states) still resume."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from onestep_jax.experiment.runner import run
from onestep_jax.train.checkpoint import Checkpointer
from onestep_jax.train.packing import MAX_PACKED_SIZE, Packing
from test_reruns import _tiny
from train_helpers import toy


def _tree():
  k = jax.random.split(jax.random.key(0), 4)
  return {'conv': {'w': jax.random.normal(k[0], (3, 3, 64, 64)),
                   'b': jax.random.normal(k[1], (64,))},
          'norm': [jax.random.normal(k[2], (32,)), jax.random.normal(k[3], (2, 5))]}


def test_pack_and_unpack_are_inverse_and_keep_large_leaves_apart():
  tree = _tree()
  packing = Packing.of(tree)
  packed, large = packing.pack(tree)
  assert packed.shape == (64 + 32 + 10,)  # the three leaves below MAX_PACKED_SIZE, in tree order
  assert len(large) == 1 and large[0] is tree['conv']['w']  # 36,864 elements >= 2**14
  assert 3 * 3 * 64 * 64 >= MAX_PACKED_SIZE > 64
  chex.assert_trees_all_equal(packing.unpack((packed, large)), tree)
  assert Packing.of({'w': tree['conv']['w']}) is None  # nothing small: no packing


@pytest.mark.parametrize('transform', [optax.adam(1e-2), optax.adamw(1e-2, weight_decay=0.1),
                                       optax.chain(optax.clip_by_global_norm(0.5),
                                                   optax.adam(1e-2))],
                         ids=['adam', 'adamw', 'clipped_adam'])
def test_an_element_wise_optimizer_updates_packed_leaves_as_it_does_each_leaf(transform):
  params = _tree()
  packing = Packing.of(params)
  state_tree, state_packed = transform.init(params), transform.init(packing.pack(params))
  for step in range(3):
    grads = jax.tree.map(lambda x, s=step: jnp.sin(x * (s + 1)), params)
    u_tree, state_tree = transform.update(grads, state_tree, params)
    u_packed, state_packed = transform.update(packing.pack(grads), state_packed,
                                              packing.pack(params))
    # Clipping sums the squares in another order: equal to float32 rounding.
    chex.assert_trees_all_close(packing.unpack(u_packed), u_tree, rtol=2e-6, atol=1e-9)
    params = optax.apply_updates(params, u_tree)


def test_without_a_size_limit_every_leaf_is_packed():
  tree = _tree()
  packing = Packing.of(tree, max_packed_size=None)
  packed, large = packing.pack(tree)
  assert packed.shape == (3 * 3 * 64 * 64 + 64 + 32 + 10,) and large == ()
  chex.assert_trees_all_equal(packing.unpack((packed, large)), tree)
  assert Packing.with_packed(tree, packing.small) == packing
  assert Packing.with_packed(tree, []) is None


def _wide_trainer(packed_update=True):
  """One group with a leaf of 2**14 elements or more (which checkpoints that do not record
  their layout kept out of the packed vector) and a small one; plain Adam."""
  from onestep_jax.train import spec
  from onestep_jax.train.trainer import Trainer

  def loss(params, batch, key):
    del key
    p = params['net']
    return jnp.mean((jnp.tanh(batch['x'] @ p['w']) + p['b'] - batch['y']) ** 2), {}

  return Trainer(groups=[spec.Group('net', trainable=True, optimizer=optax.adam(1e-2))],
                 phases=[spec.Phase('fit', loss, updates=('net',))],
                 stages=[spec.Stage([('fit', 1)])], batch_size=8, packed_update=packed_update)


def _wide_params():
  k = jax.random.split(jax.random.key(1), 2)
  return {'net': {'w': 0.1 * jax.random.normal(k[0], (130, 130)),
                  'b': jax.random.normal(k[1], (130,))}}


def _wide_batch(step, process_index, process_count):
  del process_index, process_count
  rng = np.random.default_rng(step)
  return {'x': rng.standard_normal((8, 130), np.float32),
          'y': rng.standard_normal((8, 130), np.float32)}


def test_on_one_device_every_leaf_is_packed():
  trainer = _wide_trainer()
  assert 130 * 130 >= MAX_PACKED_SIZE
  assert trainer.optimizer_layout(_wide_params()) == {'net': [0, 1]}  # b, w in tree order
  assert _wide_trainer(packed_update=False).optimizer_layout(_wide_params()) == {'net': None}


def test_every_leaf_is_packed_only_on_cpu_meshes_without_an_fsdp_axis():
  import types
  from onestep_jax.train.trainer import packed_size_limit
  mesh = lambda platform, fsdp: types.SimpleNamespace(
      shape={'data': 8 // fsdp, 'fsdp': fsdp},
      devices=np.array([types.SimpleNamespace(platform=platform)] * 8))
  assert packed_size_limit(mesh('cpu', 1), 2**14) is None
  assert packed_size_limit(mesh('cpu', 2), 2**14) == 2**14
  assert packed_size_limit(mesh('gpu', 1), 100) == 100
  assert packed_size_limit(mesh('tpu', 1), 2**14) == 2**14


@pytest.mark.parametrize('saved_by,restored_by', [
    ('before_layouts_were_recorded', 'packed'),  # (such a run's record says packed_update=True)
    ('per_leaf', 'packed'), ('packed', 'per_leaf'), ('packed', 'packed')])
def test_a_checkpoint_in_another_layout_resumes_as_the_uninterrupted_run(tmp_path, saved_by,
                                                                         restored_by):
  """Optimizer states written in one layout (the legacy one: the large leaf by itself) resume
  converted into another, and the run goes on as if uninterrupted (to float32 rounding: the
  first steps ran in the writer's programs)."""
  writer = _wide_trainer(packed_update=saved_by != 'per_leaf')
  if saved_by == 'before_layouts_were_recorded':
    writer._max_packed_size = MAX_PACKED_SIZE  # pylint: disable=protected-access
  state = writer.init_state(_wide_params(), key=jax.random.PRNGKey(0))
  state = writer.train(state, get_batch=_wide_batch, num_steps=3, progress=False)
  with Checkpointer(tmp_path, teacher_identity='wide') as ckpt:
    if saved_by == 'before_layouts_were_recorded':
      ckpt.save(state)  # as the trainer saved then: no layout recorded
      packed, (large,) = state.opt_state['net'][0].mu  # Adam's first moments
      assert packed.shape == (130,) and large.shape == (130, 130)
    else:
      writer._save(state, ckpt)  # pylint: disable=protected-access
  reader = _wide_trainer(packed_update=restored_by == 'packed')
  # as the runner resumes: into shapes and shardings, nothing initialised
  template = reader.state_template(lambda key: _wide_params(), jax.random.PRNGKey(0),
                                   key=jax.random.PRNGKey(0))
  with Checkpointer(tmp_path, teacher_identity='wide') as ckpt:
    restored = reader.restore(ckpt, template)
  assert jax.tree.structure(restored.opt_state) == jax.tree.structure(template.opt_state)
  resumed = reader.train(restored, get_batch=_wide_batch, num_steps=5, progress=False)
  straight = reader.train(reader.init_state(_wide_params(), key=jax.random.PRNGKey(0)),
                          get_batch=_wide_batch, num_steps=5, progress=False)
  chex.assert_trees_all_close(resumed.checkpoint_items(), straight.checkpoint_items(),
                              rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('layout', [{'net': [7]}, {'net': 'all'}, {'other': None}, [0, 1]])
def test_a_recorded_layout_that_is_not_the_runs_is_ignored(tmp_path, layout):
  """A layout record that does not fit the run's groups (hand-edited, another run's) is not
  trusted: the arrays restore as they are if they fit."""
  trainer = _wide_trainer()
  state = trainer.train(trainer.init_state(_wide_params(), key=jax.random.PRNGKey(0)),
                        get_batch=_wide_batch, num_steps=2, progress=False)
  with Checkpointer(tmp_path, teacher_identity='wide') as ckpt:
    ckpt.save(state, optimizer_layout=layout)
  template = trainer.init_state(_wide_params(), key=jax.random.PRNGKey(1))
  with Checkpointer(tmp_path, teacher_identity='wide') as ckpt:
    restored = trainer.restore(ckpt, template)
  chex.assert_trees_all_equal(restored.checkpoint_items(), state.checkpoint_items())


def _train(trainer, num_steps, checkpointer=None):
  state = trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(0))
  return trainer.train(state, get_batch=toy.get_batch, num_steps=num_steps,
                       checkpointer=checkpointer, progress=False)


def test_a_packed_trainer_trains_as_a_per_leaf_one():
  """The toy's groups (Adam, one with global-norm clipping), both layouts, six steps."""
  packed = _train(toy.make_trainer(), 6)
  per_leaf = _train(toy.make_trainer(packed_update=False), 6)
  assert jax.tree.structure(packed.opt_state) != jax.tree.structure(per_leaf.opt_state)
  chex.assert_trees_all_close((packed.params, packed.ema), (per_leaf.params, per_leaf.ema),
                              rtol=1e-5, atol=1e-6)


def test_a_checkpoint_in_the_other_layout_is_refused_with_a_message_and_kept(tmp_path):
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    _train(toy.make_trainer(packed_update=False), 2, checkpointer=ckpt)
  trainer = toy.make_trainer()
  template = trainer.init_state(toy.init_params(), key=jax.random.PRNGKey(0))
  with Checkpointer(tmp_path, teacher_identity='toy') as ckpt:
    with pytest.raises(ValueError, match='packed_update=false'):
      ckpt.restore(template)
    assert ckpt.all_steps() == [2]  # not set aside as broken
  assert sorted(os.listdir(tmp_path)) == ['2']


def test_a_run_recorded_before_packed_updates_resumes_in_its_own_layout(tmp_path):
  workdir = tmp_path / 'run'
  run(_tiny(packed_update=False), str(workdir), progress=False)
  record = json.loads((workdir / 'config.json').read_text())
  del record['train']['packed_update']  # as recorded before the field existed
  (workdir / 'config.json').write_text(json.dumps(record))
  run(_tiny(num_steps=30), str(workdir), progress=False)  # the default is packed_update=True
  assert '30' in os.listdir(workdir / 'checkpoints')
  assert json.loads((workdir / 'config.json').read_text())['train'].get('packed_update') in (
      None, False)


def test_a_recorded_run_and_its_teacher_run_keep_their_recorded_layouts(tmp_path):
  from onestep_jax.experiment import runner
  config = _tiny()  # packed_update=True by default
  config.teacher_run = _tiny()
  record = tmp_path / 'config.json'
  assert runner._read_record(str(record), config) is None  # no record yet
  assert runner._with_recorded_fields(None, config) is config
  old = json.loads(json.dumps(config.to_dict()))
  del old['train']['packed_update'], old['teacher_run']['train']['packed_update']
  record.write_text(json.dumps(old))
  resolved = runner._with_recorded_fields(runner._read_record(str(record), config), config)
  assert resolved.train.packed_update is False and resolved.teacher_run.train.packed_update is False
  assert runner._rerun_changes(str(record), runner._read_record(str(record), resolved),
                               resolved) == []
  old['teacher_run']['train']['packed_update'] = True
  record.write_text(json.dumps(old))
  resolved = runner._with_recorded_fields(runner._read_record(str(record), config), config)
  assert resolved.teacher_run.train.packed_update is True


def test_unpacking_at_starts_passed_in_equals_unpacking_at_constant_offsets():
  """The trainer passes `starts()` into its jitted updates as arguments (one unpacking kernel per
  leaf size); the tree is the same."""
  tree = _tree()
  packing = Packing.of(tree)
  assert packing.starts() == (0, 64, 96)  # conv/b (64), norm/0 (32), norm/1 (10), in tree order
  pair = packing.pack(tree)
  got = jax.jit(packing.unpack)(pair, tuple(jnp.int32(s) for s in packing.starts()))
  chex.assert_trees_all_equal(got, tree)
