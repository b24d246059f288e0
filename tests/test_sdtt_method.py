"""The 'sdtt' method: rounds, the promotion of the student to teacher, exact resume, and a run
end to end."""
import jax
import numpy as np
import pytest

from onestep_jax.data import get_dataset
from onestep_jax.experiment.overrides import load_config_file
from onestep_jax.experiment.runner import resolve_config, run
from onestep_jax.methods import sdtt
from onestep_jax.nets.dit import DiT
from onestep_jax.train.export import export_params, load_exported
from test_discrete_mdlm import ROOT, check_resume_is_exact, tiny_mdlm_config
from test_dit import _random_dit_params


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  """A random tiny DiT exported the way an mdlm run exports its teacher."""
  c = tiny_mdlm_config()
  kwargs = dict(c.net.kwargs.to_dict(), vocab_size=5)
  path = tmp_path_factory.mktemp('teacher') / 'export'
  export_params(path, _random_dit_params(DiT(**kwargs), 0), net_kwargs=kwargs,
                metadata={'network': 'dit', 'method': 'mdlm', 'mask_index': 4, 'length': 8,
                          'time_conditioning': False, 'schedule_eps': 1e-3})
  return str(path)


def tiny_sdtt_config(teacher, **train):
  c = load_config_file(f'{ROOT}/configs/sdtt_markov.py:{teacher}')
  c.train.compilation_cache = False
  c.data.kwargs.vocab_size, c.data.kwargs.length = 4, 8
  c.method.update(base_steps=8, min_steps=2, round_steps=3, sample_steps=(2,))
  c.train.update(**{'batch_size': 16, 'log_every': 3, 'save_every': 3, 'num_steps': 6, **train})
  c.eval.update(num_samples=40, batch_size=20)
  return c


def test_rounds_halve_the_steps_down_to_the_minimum():
  m = load_config_file(f'{ROOT}/configs/sdtt_markov.py').method
  assert sdtt.round_teacher_steps(m) == [256, 128, 64, 32, 16]  # students: 128 ... 8
  m.base_steps = 96
  with pytest.raises(ValueError, match='power of two'):
    sdtt.round_teacher_steps(m)


def test_rounds_promote_the_student_and_resume_exactly(teacher_dir, tmp_path):
  # Resuming at step 2 crosses the promotion at step 3 after the restore.
  trainer, dataset, state = check_resume_is_exact(tiny_sdtt_config(teacher_dir), tmp_path,
                                                  stop=2, end=3)
  get = lambda step, pi, pc: dataset.get_batch(step, 16, seed=0, process_index=pi,
                                              process_count=pc)
  student_after_round_0 = jax.tree.map(np.asarray, state.params['student'])
  original = jax.tree.map(np.asarray, state.frozen['original'])
  jax.tree.map(np.testing.assert_array_equal, state.params['teacher']['network'], original)
  assert float(state.params['teacher']['dt']) == np.float32((1 - 1e-5) / 8)
  state = trainer.train(state, get_batch=get, num_steps=4, progress=False)  # promote, round 1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               state.params['teacher']['network'], student_after_round_0)
  assert float(state.params['teacher']['dt']) == np.float32((1 - 1e-5) / 4)
  jax.tree.map(np.testing.assert_array_equal, state.frozen['original'], original)
  assert {k: int(v) for k, v in state.updates.items()} == {'distill': 4, 'promote': 1}


def test_sdtt_run_reports_teacher_and_student(teacher_dir, tmp_path):
  metrics = run(tiny_sdtt_config(teacher_dir, num_steps=2), str(tmp_path), progress=False)
  for model in ('teacher', 'student'):
    assert {f'{model}/sample_nll@2', f'{model}/entropy@2', f'{model}/nelbo'} <= set(metrics)
  exported = load_exported(tmp_path / 'export')
  assert exported.metadata['method'] == 'sdtt' and exported.metadata['sample_steps'] == 2
  with pytest.raises(ValueError, match='token ids'):
    c = tiny_sdtt_config(teacher_dir)
    c.data.kwargs.vocab_size = 6
    run(c, str(tmp_path / 'other'), progress=False)


def test_an_imported_checkpoint_is_a_teacher(fixtures_dir):
  config = load_config_file(f'{ROOT}/configs/sdtt_markov.py:mdlm:'
                            f'{fixtures_dir / "mdlm_dit_tiny.npz"}')
  config.data.kwargs.vocab_size = 10  # the fixture's vocabulary without its mask token
  config = resolve_config(config, get_dataset('markov', **config.data.kwargs.to_dict()))
  assert config.net.kwargs.to_dict() == {'vocab_size': 11, 'hidden_size': 32, 'cond_dim': 16,
                                         'n_heads': 2, 'n_blocks': 2, 'mlp_ratio': 4,
                                         'dropout': 0.0}
  assert config.method.mask_index == 10 and not config.method.time_conditioning
  with pytest.raises(FileNotFoundError, match='neither'):
    sdtt.load_token_teacher(str(fixtures_dir / 'no_such_run'))
