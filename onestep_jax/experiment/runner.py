"""Train, sample and evaluate a configured run in a workdir; the same call again resumes."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from onestep_jax.data import get_dataset
from onestep_jax.atomic import atomic_path
from onestep_jax.experiment import discrete_evaluation
from onestep_jax.experiment import image_metrics as image_metrics_lib
from onestep_jax.experiment import inception_evaluation
from onestep_jax.experiment.evaluation import (
    evaluate, plan_evaluation, previous_training_timings, reference_pair, sample_generators,
    save_evaluation_curves, save_sample_pictures, save_training_curves, write_json)
from onestep_jax.methods import build_method, resolve_method_config
from onestep_jax.methods.mdlm import DiscreteSetup
from onestep_jax.train.checkpoint import Checkpointer, latest_saved_step
from onestep_jax.train.compilation_cache import enable_compilation_cache
from onestep_jax.train.executable_cache import ExecutableCache
from onestep_jax.train.export import export_params
from onestep_jax.train.mesh import make_mesh
from onestep_jax.train.metrics import MetricWriter, read_metrics
from onestep_jax.train.state import host_value
from onestep_jax.train.trainer import Trainer

MODES = ('train', 'sample', 'evaluate')
TEACHER_RUN_DIR = 'teacher'  # <workdir>/teacher: the teacher run of a config's `teacher_run`
# Besides every eval.* field, a rerun of a workdir may change only these: they do not change
# what is trained (README, "Running experiments").
RERUN_FIELDS = ('train.num_steps', 'train.log_every', 'train.save_every',
                'train.keep_checkpoints', 'train.compilation_cache', 'train.parallel_compile',
                'train.one_set_of_temporaries',
                'method.sample_steps')  # sampling only: e.g. a teacher at another NFE
# Fields added after runs were recorded -> the value that reproduces the behaviour from before
# they existed. A record without such a field reads as holding that value, so a run started
# before the field was added resumes while the field keeps that value, and is refused otherwise.
FIELDS_ADDED = {'method.adaptive_weighting': True, 'method.projection_ratio_term': True,
                'train.packed_update': False, 'train.parallel_compile': False,
                'train.one_set_of_temporaries': False}
# Fields a rerun takes from its record whatever its config says: the checkpoints' layout.
RECORDED_FIELDS = ('train.packed_update',)


def resolve_config(config: ml_collections.ConfigDict, dataset) -> ml_collections.ConfigDict:
  """Fills fields taken from the method's teacher or measured from the data: the network
  settings, sigma_data and the MLP's data_dim."""
  config = ml_collections.ConfigDict(config.to_dict())
  if config.data.conditional and not dataset.num_classes:
    raise ValueError(f'data.conditional=True but dataset {dataset.name!r} has no labels')
  config = resolve_method_config(config, dataset)  # e.g. the network of a distilled teacher
  if config.net.name == 'mlp':
    if len(dataset.example_shape) != 1:
      raise ValueError(f'the mlp network takes vectors; dataset {dataset.name!r} has examples of '
                       f'shape {dataset.example_shape}; use song_unet or dhariwal_unet')
    config.net.kwargs.data_dim = int(dataset.example_shape[0])
    if config.data.conditional:
      config.net.kwargs.label_dim = dataset.num_classes
  if 'sigma_data' in config.method and config.method.sigma_data is None:
    sample = dataset.sample(min(10_000, dataset.num_examples or 10_000), seed=config.seed)
    config.method.sigma_data = round(float(np.std(sample)), 4)
  return config


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a.b': leaf} of a nested dict."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def _config_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'a.b': leaf} of `config`, as config.json records it (tuples as lists)."""
  return _flatten(json.loads(json.dumps(config.to_dict())))


def _read_record(path: str, config: ml_collections.ConfigDict) -> Optional[dict[str, Any]]:
  """The fields of the config.json at `path` (None if there is none), with FIELDS_ADDED's values
  for the fields of `config` that the record predates (its teacher_run's too)."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    record = _flatten(json.load(f))
  new = _config_fields(config)
  for prefix in ('', 'teacher_run.'):
    record.update({prefix + k: v for k, v in FIELDS_ADDED.items()
                   if prefix + k in new and prefix + k not in record})
  return record


def _with_recorded_fields(record: Optional[dict[str, Any]], config: ml_collections.ConfigDict
                          ) -> ml_collections.ConfigDict:
  """`config` with the record's values of RECORDED_FIELDS (its teacher_run's too)."""
  if record is None:
    return config
  new = _config_fields(config)
  kept = {prefix + k: record[prefix + k] for prefix in ('', 'teacher_run.')
          for k in RECORDED_FIELDS if prefix + k in record and prefix + k in new}
  config = ml_collections.ConfigDict(config.to_dict())
  config.update_from_flattened_dict(kept)
  return config


def _rerun_may_change(field: str) -> bool:
  return field.startswith('eval.') or field in RERUN_FIELDS


def _rerun_changes(path: str, record: Optional[dict[str, Any]],
                   config: ml_collections.ConfigDict) -> Optional[list[str]]:
  """'field old -> new' for each field of the resolved `config` that differs from the `record`
  read from `path` (None if there is no record); any change outside eval.* and RERUN_FIELDS is
  refused."""
  if record is None:
    return None
  new = _config_fields(config)
  show = lambda tree, k: json.dumps(tree[k]) if k in tree else 'unset'
  changed = [k for k in sorted(record.keys() | new.keys()) if show(record, k) != show(new, k)]
  changes = [f'{k} {show(record, k)} -> {show(new, k)}' for k in changed]
  own = [k.removeprefix('teacher_run.') for k in changed]  # teacher_run.*: the same rules
  if not all(_rerun_may_change(k) for k in own):
    raise ValueError(f'{os.path.dirname(path)} holds a run with another config '
                     f'({", ".join(changes)}); a rerun may change only eval.* and '
                     f'{", ".join(RERUN_FIELDS)}; use a new workdir')
  return changes


def run_executable_cache(config: ml_collections.ConfigDict, setup,
                         workdir: str) -> Optional[ExecutableCache]:
  """The compiled phases of the run in `workdir`, kept in <workdir>/executables when
  train.compilation_cache is on, keyed on the resolved config and the teacher's content hash
  (see onestep_jax.train.executable_cache). The fields a rerun may change (eval.* and
  RERUN_FIELDS) are left out of the key: they do not reach the training programs, so a run
  extended with a larger train.num_steps loads its phases too."""
  return _workdir_executable_cache(config, setup, os.path.join(workdir, 'executables'),
                                   left_out=_rerun_may_change)


def sampler_executable_cache(config: ml_collections.ConfigDict, setup,
                             workdir: str) -> Optional[ExecutableCache]:
  """The compiled samplers of the evaluation of the run in `workdir`, kept in
  <workdir>/executables/samplers when train.compilation_cache is on. Their key keeps eval.* and
  method.sample_steps, which reach the samplers (a rerun that changes them compiles its samplers
  again); of the fields a rerun may change, only the train.* ones are left out."""
  return _workdir_executable_cache(
      config, setup, os.path.join(workdir, 'executables', 'samplers'),
      left_out=lambda field: field.startswith('train.') and _rerun_may_change(field))


def _workdir_executable_cache(config: ml_collections.ConfigDict, setup, directory: str, *,
                              left_out: Callable[[str], bool]) -> Optional[ExecutableCache]:
  """An ExecutableCache in `directory` keyed on the config's fields but those `left_out` (the
  teacher run's alike) and the teacher's content hash; None without train.compilation_cache."""
  if not config.train.compilation_cache:
    return None
  fields = {k: v for k, v in _config_fields(config).items()
            if not left_out(k.removeprefix('teacher_run.'))}
  return ExecutableCache(directory,
                         key=json.dumps([fields, setup.teacher_identity], sort_keys=True))


def _trim_history(path: str, last_step: int) -> None:
  """Drops metric lines written after the checkpoint a run resumes from."""
  if os.path.exists(path):
    keep = [r for r in read_metrics(path) if r['step'] <= last_step]
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in keep)


def with_teacher_run(config: ml_collections.ConfigDict, workdir: str, *, mode: str,
                     progress: bool) -> ml_collections.ConfigDict:
  """`config` distilling the teacher that its `teacher_run` section (the full config of the
  teacher's own run, if present) trains in <workdir>/teacher: one command trains the teacher and
  then distils it. In mode 'train' that run comes first, resumed from its checkpoints if it was
  interrupted, and is skipped once it has written its metrics.json."""
  if config.get('teacher_run') is None:
    return config
  teacher_dir = os.path.join(workdir, TEACHER_RUN_DIR)
  if mode == 'train' and not os.path.exists(os.path.join(teacher_dir, 'metrics.json')):
    run(config.teacher_run, teacher_dir, mode='train', progress=progress)
  config = ml_collections.ConfigDict(config.to_dict())
  config.method.teacher = teacher_dir
  return config


def run(config: ml_collections.ConfigDict, workdir: str, *, mode: str = 'train',
        progress: bool = True) -> dict[str, float]:
  """Runs `mode` in `workdir` and returns the final metrics (also in metrics.json).

  All input is checked before `workdir` is created. A rerun resumes from the newest intact
  checkpoint; it refuses a config that differs from the recorded config.json except in eval.*
  and RERUN_FIELDS, whose new values are recorded.
  """
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; valid modes: {list(MODES)}')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f'workdir {workdir} is a file, not a directory')
  for section, field, least in (('train', 'batch_size', 1), ('train', 'num_steps', 0),
                                ('eval', 'every_steps', 0)):
    if config[section][field] < least:
      raise ValueError(f'{section}.{field} must be >= {least}, got {config[section][field]}')
  checkpoints = os.path.join(workdir, 'checkpoints')
  if mode != 'train' and not os.path.isdir(checkpoints):
    raise FileNotFoundError(f'mode {mode!r} needs a trained run, but {workdir} has no '
                            'checkpoint; run with --mode=train first')
  if config.train.compilation_cache:
    enable_compilation_cache()  # $ONESTEP_JAX_CACHE_DIR or ~/.cache/onestep_jax/xla
  dataset = get_dataset(config.data.name, **config.data.kwargs.to_dict())
  # gen_ppl's AR model, checked before any training (that of a teacher_run included); an 'ar'
  # run may score its own samples with the export it writes before evaluating
  ar_path = config.eval.get('ar_evaluator', '')
  own_evaluator = bool(ar_path) and os.path.realpath(ar_path) == os.path.realpath(workdir)
  ar_evaluator = None if own_evaluator else discrete_evaluation.load_ar_evaluator(ar_path,
                                                                                  dataset)
  config = with_teacher_run(config, workdir, mode=mode, progress=progress)
  config = resolve_config(config, dataset)
  held_out, config.eval.num_samples = plan_evaluation(config.data, dataset,
                                                      num_samples=config.eval.num_samples)
  config_path = os.path.join(workdir, 'config.json')
  record = _read_record(config_path, config)
  config = _with_recorded_fields(record, config)
  changes = _rerun_changes(config_path, record, config)
  setup = build_method(config, dataset)
  trainer = Trainer(groups=setup.groups, phases=setup.phases, stages=setup.stages,
                    batch_size=config.train.batch_size, nonfinite=config.train.nonfinite,
                    mesh=make_mesh(fsdp=config.train.fsdp),
                    packed_update=config.train.packed_update,
                    parallel_compile=config.train.parallel_compile,
                    one_set_of_temporaries=config.train.one_set_of_temporaries,
                    executable_cache=run_executable_cache(config, setup, workdir))
  samplers = sampler_executable_cache(config, setup, workdir)
  reference = reference_pair(dataset if held_out is None else held_out, config.eval.num_samples,
                             seed=config.eval.seed)
  key_init, key_train = jax.random.split(jax.random.PRNGKey(config.seed))
  resume_step = latest_saved_step(checkpoints)
  if mode == 'train' and resume_step is not None and resume_step < config.train.num_steps:
    trainer.preload(resume_step)  # the compiled phases load while the state is made
  t0 = time.perf_counter()
  if resume_step is not None:  # restored into a template: nothing the checkpoint holds is made
    state = trainer.state_template(setup.init_params, key_init, key=key_train)
  else:
    state = trainer.init_state(setup.init_params(key_init), key=key_train)
  timings = {'init_time_s': time.perf_counter() - t0}

  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  history = os.path.join(workdir, 'metrics.jsonl')
  with Checkpointer(checkpoints, teacher_identity=setup.teacher_identity or '',
                    max_to_keep=config.train.keep_checkpoints) as ckpt:
    if resume_step is not None or mode != 'train':
      state = trainer.restore(ckpt, state)
      if is_main:
        _trim_history(history, int(state.step))
    if is_main and changes != []:  # a new record, or new values of eval.* or RERUN_FIELDS
      write_json(config_path, config.to_dict())
      if changes:
        print(f'{config_path}: recorded the new {", ".join(changes)}', file=sys.stderr)
    if mode == 'train':
      start = int(state.step)
      writer = MetricWriter(history, tensorboard_dir=os.path.join(workdir, 'tensorboard'))
      after_step = None
      if config.eval.every_steps:
        after_step = _periodic_evaluation(config, setup, dataset, held_out=held_out,
                                          reference=reference, workdir=workdir, writer=writer,
                                          ar_evaluator=ar_evaluator, samplers=samplers)
      t0 = time.perf_counter()
      state = trainer.train(
          state, num_steps=config.train.num_steps, checkpointer=ckpt,
          save_every=config.train.save_every, log_every=config.train.log_every,
          metric_writer=writer, progress=progress and is_main, after_step=after_step,
          get_batch=lambda step, pi, pc: dataset.get_batch(
              step, config.train.batch_size, seed=config.seed, process_index=pi,
              process_count=pc))
      if int(state.step) > start:
        timings['train_time_s'] = time.perf_counter() - t0
        timings['train_steps_per_s'] = (int(state.step) - start) / timings['train_time_s']

  sampling_params = state.sampling_params()
  if mode == 'train':
    meta = dict(setup.export_kwargs)
    export_params(os.path.join(workdir, 'export'), sampling_params[setup.export_group],
                  net_kwargs=meta.pop('network_kwargs'), metadata=meta)
  if is_main and mode != 'sample':
    save_training_curves(workdir)
  samples = sample_generators(
      generators=setup.generators, params=sampling_params,
      num_samples=config.eval.num_samples, batch_size=config.eval.batch_size,
      seed=config.eval.seed, num_classes=dataset.num_classes if config.data.conditional else 0,
      executable_cache=samplers)
  written = save_sample_pictures(samples, workdir=workdir, reference=reference[0],
                                 mixture=dataset.mixture) if is_main else []
  if is_main and getattr(dataset, 'tokenizer', None) is not None:  # token models: decoded text
    written += discrete_evaluation.save_sample_texts(samples, workdir=workdir,
                                                     tokenizer=dataset.tokenizer)
  if mode == 'sample':
    if is_main:
      for name, (_, x, _) in samples.items():
        written.append(os.path.join(workdir, f'samples_{name}.npy'))
        np.save(written[-1], x)
      for path in written:
        print(f'wrote {path}')
    return {f'{g.model}/samples_per_s@{g.nfe}': len(x) / t for g, x, t in samples.values()}
  image_metrics, inception_metrics = None, {}
  if len(dataset.example_shape) == 3 and config.eval.feature_extractor:  # paper-comparable FID
    inception_metrics = inception_evaluation.evaluate(
        config=config, dataset=dataset, generators=setup.generators, params=sampling_params,
        workdir=workdir, progress=progress,
        run_identity=f'step {int(host_value(state.step))}, teacher {setup.teacher_identity}')
  elif len(dataset.example_shape) == 3:
    features, info = image_metrics_lib.classifier_features(dataset, held_out=held_out,
                                                           workdir=workdir)
    timings.update(info)
    image_metrics = image_metrics_lib.feature_metric_fn(features)
  if own_evaluator and isinstance(setup, DiscreteSetup):
    ar_evaluator = discrete_evaluation.load_ar_evaluator(ar_path, dataset)
  metrics = _measure(samples, config=config, setup=setup, dataset=dataset, reference=reference,
                     params=sampling_params, image_metrics=image_metrics,
                     ar_evaluator=ar_evaluator)
  metrics.update(inception_metrics)
  metrics_path = os.path.join(workdir, 'metrics.json')
  if 'train_time_s' not in timings:  # nothing trained now: keep the timings of the training run
    timings.update(previous_training_timings(metrics_path))
  metrics.update(timings)
  if is_main:
    write_json(metrics_path, metrics)
  return metrics


def _measure(samples, *, config, setup, dataset, reference, params, image_metrics, ar_evaluator,
             floors: bool = True) -> dict[str, float]:
  """The metrics of `samples` (from `sample_generators`): those of token models, or of points and
  images (features by `image_metrics`); the data floors too with `floors`."""
  if isinstance(setup, DiscreteSetup):
    models = {g.model for g, _, _ in samples.values()}
    return discrete_evaluation.evaluate(
        samples=samples, reference=reference, dataset=dataset,
        nelbo_fns={m: fn for m, fn in setup.nelbo_fns.items() if m in models}, params=params,
        batch_size=config.eval.batch_size, seed=config.eval.seed, evaluator=ar_evaluator,
        floors=floors)
  return evaluate(samples=samples, reference=reference, seed=config.eval.seed,
                  mixture=dataset.mixture, image_metrics=image_metrics, floors=floors)


def _periodic_evaluation(config, setup, dataset, *, held_out, reference, workdir: str,
                         writer: MetricWriter, ar_evaluator, samplers: Optional[ExecutableCache]):
  """`after_step` for `Trainer.train`: every `eval.every_steps` steps, the trained models'
  metrics as in the final evaluation (images on the classifier's features, even when the final
  one uses Inception), written to metrics.jsonl as `eval/<model>/<metric>@<nfe>`. A frozen
  teacher's generators are skipped; non-finite samples give NaN metrics instead of stopping."""
  generators = tuple(g for g in setup.generators
                     if g.model != 'teacher' or setup.teacher_identity is None)
  compiled, image_metrics = {}, None

  def after_step(state, step: int) -> None:
    nonlocal image_metrics
    if step % config.eval.every_steps:
      return
    if len(dataset.example_shape) == 3 and image_metrics is None:
      features, _ = image_metrics_lib.classifier_features(dataset, held_out=held_out,
                                                          workdir=workdir)
      image_metrics = image_metrics_lib.feature_metric_fn(features)
    params = state.sampling_params()
    samples = sample_generators(
        generators=generators, params=params, num_samples=config.eval.num_samples,
        batch_size=config.eval.batch_size, seed=config.eval.seed,
        num_classes=dataset.num_classes if config.data.conditional else 0, compiled=compiled,
        check_finite=False, executable_cache=samplers)
    metrics = _measure(samples, config=config, setup=setup, dataset=dataset,
                       reference=reference, params=params,
                       image_metrics=image_metrics,
                       ar_evaluator=ar_evaluator, floors=False)
    writer.write(step, {f'eval/{k}': v for k, v in metrics.items()
                        if not k.rsplit('@', 1)[0].endswith('_per_s')})  # speeds: not the model's
    if jax.process_index() == 0:
      save_evaluation_curves(workdir)

  return after_step
