"""The 'mdlm' teacher method: a run through the experiment runner (metrics, export) and exact
resume from a checkpoint."""
import json
import pathlib

import jax
import ml_collections
import numpy as np

from onestep_jax.data import get_dataset
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config, run
from onestep_jax.methods import build_method
from onestep_jax.methods.mdlm import make_optimizer
from onestep_jax.train.checkpoint import Checkpointer
from onestep_jax.train.export import load_exported
from onestep_jax.train.trainer import Trainer
from train_helpers.optimizers import successive_updates

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_mdlm_config(**train):
  c = load_config_file(f'{ROOT}/configs/mdlm_markov.py')
  c.train.compilation_cache = False
  c.data.kwargs.vocab_size, c.data.kwargs.length = 4, 8
  c.net.kwargs.update(hidden_size=16, cond_dim=8, n_heads=2, n_blocks=1)
  c.method.sample_steps = (4,)
  c.train.update(batch_size=16, log_every=3, **train)
  c.eval.update(num_samples=40, batch_size=20)
  return c


def check_resume_is_exact(config, checkpoint_dir, *, stop: int, end: int):
  """Training to `end` equals training to `stop`, checkpointing, restoring into the runner's
  template (`Trainer.state_template`: only the frozen groups made) and training on to `end`:
  every parameter, EMA and optimizer state, bit for bit. Returns the trainer, dataset and final
  state."""
  dataset = get_dataset(config.data.name, **config.data.kwargs.to_dict())
  config = resolve_config(config, dataset)
  setup = build_method(config, dataset)
  batch = config.train.batch_size
  trainer = Trainer(groups=setup.groups, phases=setup.phases, stages=setup.stages,
                    batch_size=batch)
  get = lambda step, pi, pc: dataset.get_batch(step, batch, seed=0, process_index=pi,
                                              process_count=pc)
  fresh = lambda: trainer.init_state(setup.init_params(jax.random.PRNGKey(0)),
                                     key=jax.random.PRNGKey(1))
  straight = trainer.train(fresh(), get_batch=get, num_steps=end, progress=False)
  with Checkpointer(checkpoint_dir, teacher_identity=setup.teacher_identity or '') as ckpt:
    trainer.train(fresh(), get_batch=get, num_steps=stop, checkpointer=ckpt, progress=False)
  with Checkpointer(checkpoint_dir, teacher_identity=setup.teacher_identity or '') as ckpt:
    restored = ckpt.restore(trainer.state_template(setup.init_params, jax.random.PRNGKey(0),
                                                   key=jax.random.PRNGKey(1)))
  assert int(restored.step) == stop
  resumed = trainer.train(restored, get_batch=get, num_steps=end, progress=False)
  jax.tree.map(np.testing.assert_array_equal, resumed.checkpoint_items(),
               straight.checkpoint_items())
  return trainer, dataset, resumed


def test_mdlm_run_reports_exact_metrics_and_exports_the_teacher(tmp_path):
  metrics = run(tiny_mdlm_config(num_steps=4, save_every=2), str(tmp_path), progress=False)
  keys = {f'teacher/{m}@4' for m in ('sample_nll', 'entropy', 'tokens_per_s')}
  assert keys | {'teacher/nelbo', 'data/sample_nll_exact', 'data/sample_nll_floor',
                 'data/entropy_floor'} <= set(metrics)
  # Floors: held-out data of the source scores its exact entropy rate, up to sampling noise; an
  # untrained model's samples and NELBO are far worse.
  assert abs(metrics['data/sample_nll_floor'] - metrics['data/sample_nll_exact']) < 0.15
  assert metrics['teacher/sample_nll@4'] > metrics['data/sample_nll_exact'] + 0.1
  assert metrics['teacher/nelbo'] > metrics['data/sample_nll_exact']
  exported = load_exported(tmp_path / 'export')
  assert exported.net_kwargs['vocab_size'] == 5 and exported.metadata['mask_index'] == 4
  assert exported.metadata['method'] == 'mdlm' and exported.metadata['length'] == 8
  recorded = json.loads((tmp_path / 'config.json').read_text())
  assert recorded['method']['mask_index'] == 4 and recorded['net']['kwargs']['vocab_size'] == 5


def test_mdlm_training_resumes_exactly(tmp_path):
  check_resume_is_exact(tiny_mdlm_config(), tmp_path, stop=3, end=5)


def test_token_models_optimizer_warms_up_and_decays_weights():
  """make_optimizer is AdamW: its k-th update is min(k / 4, 1) times the full-rate one with a
  4-step warm-up, and weight decay adds -lr * wd * params to Adam's update."""
  m = ml_collections.ConfigDict(dict(beta1=0.9, beta2=0.99, eps=1e-8, lr_warmup_steps=4,
                                     weight_decay=0.0))
  params = {'w': jax.numpy.asarray([1.0, -3.0, 0.5])}
  grads = {'w': jax.numpy.asarray([0.2, -1.0, 2.0])}

  def updates(**changes):
    opt = make_optimizer(ml_collections.ConfigDict({**m.to_dict(), **changes}), 1e-2)
    return successive_updates(opt, params, grads, 6)

  ramp = np.array([0, 0.25, 0.5, 0.75, 1, 1])[:, None]
  full = updates(lr_warmup_steps=0)
  assert np.all(np.abs(full) > 0)
  np.testing.assert_allclose(updates(), full * ramp, rtol=1e-6)
  np.testing.assert_allclose(updates(weight_decay=0.1) - updates(),
                             -1e-2 * ramp * 0.1 * np.asarray(params['w']), rtol=1e-5, atol=1e-9)
