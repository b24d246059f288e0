"""The generic trainer: jits each phase once with shardings and runs the stage schedules.

One trainer step is one pass over the current stage's schedule, all phases seeing the same batch
`get_batch(step, process_index, process_count)`, followed by the EMA updates. Non-finite updates
are skipped inside the jitted phase (no host round-trip); the host looks at the counters only
every `log_every` steps and before saving.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import gc
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh

from onestep_jax import xla_cpu
from onestep_jax.experiment.allocator import (allocated_bytes, malloc_and_free,
                                              release_freed_memory)
from onestep_jax.train import mesh as mesh_lib
from onestep_jax.train import spec
from onestep_jax.train.checkpoint import Checkpointer, NonFiniteError
from onestep_jax.train.ema import ema_beta, ema_update
from onestep_jax.train.executable_cache import ExecutableCache, load_or_compile
from onestep_jax.train.metrics import MetricWriter
from onestep_jax.train.packing import Packing
from onestep_jax.train.preemption import Preempted, StopOnSigterm
from onestep_jax.train.state import TrainState, all_finite, host_value

NONFINITE_POLICIES = ('skip', 'stop')
# One set of temporaries (see `Trainer._await_temporaries`): phases whose XLA temporaries are at
# least this large are waited for, at most this long after their outputs are ready.
LARGE_TEMPORARIES = 32 * 2**20
TEMPORARIES_WAIT_S = 0.02


@contextlib.contextmanager
def _gc_paused():
  """Python's cyclic garbage collector off inside, restored after. Tracing and lowering a U-Net
  phase allocate millions of short-lived objects, and the collections they set off took about
  a fifth of the tracing and lowering time (EDM reference step: 2.1-2.3 s of CPU without this,
  1.5-1.8 s with it)."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def _raw_key(key: jax.Array) -> jax.Array:
  """`key` as raw uint32 data, which checkpoints can hold."""
  return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def _placed_shapes(shapes: Any, shardings: Any) -> Any:
  """`shapes` (leaves with .shape and .dtype) as ShapeDtypeStructs placed with `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      shapes, shardings)


def packed_size_limit(mesh: Mesh, fsdp_min_size: int) -> Optional[int]:
  """The size below which the packed update packs a leaf (None: every leaf): on CPU meshes
  without an 'fsdp' axis every leaf, since each large leaf's update was a YNNPACK fusion for
  XLA:CPU to build at a program's first run and load (docs/RESULTS.md, "Every leaf in one
  vector"); elsewhere the leaves the mesh replicates, those below `fsdp_min_size`, so that an
  accelerator does not hold a packed copy of large parameters and their gradients."""
  on_cpu = all(d.platform == 'cpu' for d in mesh.devices.flat)
  return None if on_cpu and mesh.shape['fsdp'] == 1 else fsdp_min_size


def _layout(packings: Mapping[str, Optional[Packing]]) -> dict[str, Optional[list[int]]]:
  """Per group, its packed leaves' indices, or None: see `Trainer.optimizer_layout`."""
  return {n: None if p is None else list(p.small) for n, p in packings.items()}


def _is_layout(layout: Any, params: Mapping[str, Any]) -> bool:
  """Whether `layout` (read from a checkpoint) is one of `params`' groups' layouts."""
  def fits(indices, tree):
    count = len(jax.tree.leaves(tree))
    return indices is None or (isinstance(indices, list) and all(
        isinstance(i, int) and 0 <= i < count for i in indices))
  return (isinstance(layout, dict) and set(layout) == set(params)
          and all(fits(layout[n], params[n]) for n in params))


def _optimizer_view(tree: Any, packing: Optional[Packing]) -> Any:
  """`tree` as the optimizer sees it in `packing`'s layout (None: the tree itself)."""
  return tree if packing is None else packing.pack(tree)


def _relayout(opt_state: Any, params: Any, old: Optional[Packing],
              new: Optional[Packing]) -> Any:
  """`opt_state` with every part laid out as `params` in `old` (an optimizer view: moments,
  traces) re-laid out as in `new` (None: the params tree itself)."""
  old_view = jax.eval_shape(lambda p: _optimizer_view(p, old), params)
  shapes = lambda tree: [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]
  is_view = lambda x: (jax.tree.structure(x) == jax.tree.structure(old_view)
                       and shapes(x) == shapes(old_view))
  return jax.tree.map(
      lambda x: _optimizer_view(x if old is None else old.unpack(x), new) if is_view(x) else x,
      opt_state, is_leaf=is_view)


def _program_name(phase: Optional[str]) -> str:
  return 'end_of_step' if phase is None else f'phase:{phase}'


# get_batch(step, process_index, process_count) -> this process's rows of the global batch.
GetBatch = Callable[[int, int, int], Any]


class Trainer:
  """Runs the phases of a method on one mesh.

  Args:
    groups: parameter groups; frozen ones are inputs only, trainable ones have an optimizer.
    phases: the jitted updates; each differentiates its loss w.r.t. its `updates` groups.
    stages: schedules in step order (see `spec.Stage`).
    batch_size: global batch size (rows over all processes); counts samples for the EMA.
    mesh: device mesh with axes ('data', 'fsdp'); default `make_mesh()` over all devices.
    nonfinite: 'skip' (drop the update, count it) or 'stop' (also skip, then raise
      NonFiniteError naming the phase and step at the next log point or save).
    fsdp_min_size: leaves with fewer elements stay replicated on an 'fsdp' mesh.
    packed_update: the optimizer of each group updates its small leaves (every leaf on a CPU
      mesh without an 'fsdp' axis: `packed_size_limit`) packed into one vector
      (`onestep_jax.train.packing`; the optimizer states follow that layout, which checkpoints
      record and `restore` converts).
      The same arithmetic for element-wise optimizers and global-norm clipping, in a fifth of
      the kernels; False for transforms that read the tree's structure (optax.masked).
    parallel_compile: when a stage first runs, compile all of its phases (and the end of
      step) at once, each in a thread as soon as it is lowered, instead of each at its first
      run. The compilers' working memory then adds up: on 2 CPU cores the first distillation
      iteration took 2-19% less time and peak RSS rose 3-18% (docs/RESULTS.md, "Compiling the
      phases at once"; not measured on hosts with more cores).
    one_set_of_temporaries: on one CPU device under tcmalloc, keep one set of XLA temporaries
      for all phases (see `_await_temporaries`): peak RSS of the distillation iterations 14-24%
      lower, iterations 1-3% longer. Does nothing on other devices and allocators.
    executable_cache: where compiled phases are kept and looked up before tracing
      (`onestep_jax.train.executable_cache`); None compiles every phase in each process. Its key
      must identify the phases' code: give one only for code whose changes it sees.
  """

  def __init__(self, *, groups: Sequence[spec.Group], phases: Sequence[spec.Phase],
               stages: Sequence[spec.Stage], batch_size: int, mesh: Optional[Mesh] = None,
               nonfinite: str = 'skip', fsdp_min_size: int = 2**14,
               packed_update: bool = True, parallel_compile: bool = False,
               one_set_of_temporaries: bool = True,
               executable_cache: Optional[ExecutableCache] = None):
    spec.validate(groups, phases, stages)
    if nonfinite not in NONFINITE_POLICIES:
      raise ValueError(f'Unknown nonfinite policy {nonfinite!r}; choose one of '
                       f'{list(NONFINITE_POLICIES)}.')
    for name, value in (('packed_update', packed_update), ('parallel_compile', parallel_compile),
                        ('one_set_of_temporaries', one_set_of_temporaries)):
      if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}.')
    if executable_cache is not None and not isinstance(executable_cache, ExecutableCache):
      raise TypeError('executable_cache must be an onestep_jax.train.executable_cache.'
                      f'ExecutableCache or None, got {executable_cache!r}.')
    for name, value, low in (('batch_size', batch_size, 1), ('fsdp_min_size', fsdp_min_size, 0)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f'{name} must be an integer >= {low}, got {value!r}.')
    self.groups = {g.name: g for g in groups}
    self.phases = {p.name: p for p in phases}
    self.stages = tuple(stages)
    self.batch_size = int(batch_size)
    self.mesh = mesh_lib.make_mesh() if mesh is None else mesh
    if self.batch_size % self.mesh.size:
      raise ValueError(f'batch_size {self.batch_size} is not divisible by the '
                       f'{self.mesh.size} devices of the mesh.')
    self.nonfinite = nonfinite
    self.fsdp_min_size = fsdp_min_size
    self.packed_update = packed_update
    self._max_packed_size = packed_size_limit(self.mesh, fsdp_min_size)
    self.parallel_compile = parallel_compile
    self.executable_cache = executable_cache
    self._tx = {g.name: g.transform() for g in groups if g.trainable}
    self._phase_index = {name: i for i, name in enumerate(self.phases)}
    self._executables: dict[Optional[str], Callable] = {}
    # Multi-device CPU: at most three programs in flight (see `mesh.host_pool_collectives`).
    self._paced = mesh_lib.host_pool_collectives(self.mesh)
    self._in_flight: Any = None
    # One CPU device under tcmalloc: program -> its XLA temporaries in bytes, for
    # `_one_set_of_temporaries` and `_await_temporaries`.
    self._temporaries: Optional[dict[Optional[str], int]] = (
        {} if (one_set_of_temporaries and not self._paced and allocated_bytes() is not None
               and all(d.platform == 'cpu' for d in self.mesh.devices.flat)) else None)
    self._starts: Optional[dict[str, tuple[jax.Array, ...]]] = None
    # phase with gives=True -> the shapes and dtypes of what it hands over, from its program
    self._handed_shapes: dict[str, Any] = {}

  # ----------------------------------------------------------------------------------------
  # State.

  def init_state(self, params: Mapping[str, Any], *, key: jax.Array) -> TrainState:
    """A fresh state placed on the mesh; `params` maps every group name to its params.

    Built by one jitted call whose outputs land directly with their shardings.
    """
    self._check_groups(params)
    key = _raw_key(key)
    abstract = jax.eval_shape(self._new_state, params, key)
    return xla_cpu.jit(self._new_state, out_shardings=self.state_shardings(abstract))(params, key)

  def state_template(self, init_params: Callable[[jax.Array], Mapping[str, Any]],
                     init_key: jax.Array, *, key: jax.Array) -> TrainState:
    """The state `init_state(init_params(init_key), key=key)` would make, as the template that a
    resumed run restores its checkpoint into: what checkpoints hold as shapes, dtypes and
    shardings only, nothing initialised (the EDM reference U-Net's initialisation and placement
    took 1.0-1.4 s), and the frozen groups, which checkpoints do not hold, made and placed (for
    them `init_params` runs; a distillation's loads its teacher and copies it)."""
    frozen = [n for n, g in self.groups.items() if not g.trainable]
    params = init_params(init_key) if frozen else None
    shapes = jax.eval_shape(lambda: params) if frozen else jax.eval_shape(init_params, init_key)
    self._check_groups(shapes)
    abstract = jax.eval_shape(self._new_state, shapes, _raw_key(key))
    shardings = self.state_shardings(abstract)
    template = _placed_shapes(abstract, shardings)
    if not frozen:
      return template
    place = xla_cpu.jit(lambda tree: tree, out_shardings=shardings.frozen)
    return template.replace(frozen=place({n: params[n] for n in frozen}))

  def _check_groups(self, params: Mapping[str, Any]) -> None:
    names = set(self.groups)
    if set(params) != names:
      raise ValueError(f'params has groups {sorted(params)}, expected {sorted(names)}.')

  def _packing(self, params: Any) -> Optional[Packing]:
    """The layout in which the optimizer sees `params` (None: the tree itself)."""
    if not self.packed_update:
      return None
    return Packing.of(params, max_packed_size=self._max_packed_size)

  def optimizer_layout(self, params: Mapping[str, Any]) -> dict[str, Optional[list[int]]]:
    """Per trainable group, the leaves (indices in tree order) its optimizer sees packed, or
    None for the tree itself: what a checkpoint records of its optimizer states' layout."""
    return _layout({n: self._packing(p) for n, p in params.items()})

  def per_leaf_opt_state(self, state: TrainState) -> dict[str, Any]:
    """`state.opt_state` with every params-shaped part (moments, traces) as the params tree,
    whatever the layout: to read, or to compare states of meshes that pack other leaves."""
    return {n: _relayout(o, state.params[n], self._packing(state.params[n]), None)
            for n, o in state.opt_state.items()}

  def restore(self, checkpointer: Checkpointer, template: TrainState, *,
              step: Optional[int] = None) -> TrainState:
    """`checkpointer.restore(template, step=step)`, with optimizer states saved in another
    layout (on a mesh that shards other leaves, with another `packed_update`, or before
    checkpoints recorded their layout) converted to this trainer's."""
    packings = {n: self._packing(p) for n, p in template.params.items()}
    current = _layout(packings)

    def adapt(saved: Optional[Mapping[str, Any]]):
      if saved is None:  # written before checkpoints recorded it: see packing.MAX_PACKED_SIZE
        saved = _layout({n: Packing.of(p) if self.packed_update else None
                         for n, p in template.params.items()})
      if saved == current or not _is_layout(saved, template.params):
        return None  # nothing to convert, or not one of this run's: the restore reports it
      old = {n: None if saved[n] is None else Packing.with_packed(p, saved[n])
             for n, p in template.params.items()}
      abstract = jax.eval_shape(
          lambda params: {n: self._tx[n].init(_optimizer_view(p, old[n]))
                          for n, p in params.items()}, template.params)
      stored = template.replace(opt_state=_placed_shapes(
          abstract, self.state_shardings(template.replace(opt_state=abstract)).opt_state))
      convert = xla_cpu.jit(
          lambda opt_state: {n: _relayout(opt_state[n], template.params[n], old[n], packings[n])
                             for n in opt_state},
          out_shardings=self.state_shardings(template).opt_state)
      return stored, lambda state: state.replace(opt_state=convert(state.opt_state))

    return checkpointer.restore(template, step=step, adapt=adapt)

  def _new_state(self, params: Mapping[str, Any], key: jax.Array) -> TrainState:
    trainable = {n: params[n] for n, g in self.groups.items() if g.trainable}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=key,
        params=trainable,
        opt_state={n: self._tx[n].init(_optimizer_view(p, self._packing(p)))
                   for n, p in trainable.items()},
        ema={n: p for n, p in trainable.items()
             if self.groups[n].ema_halflife_nimg is not None},
        frozen={n: params[n] for n, g in self.groups.items() if not g.trainable},
        updates={p: jnp.zeros((), jnp.int32) for p in self.phases},
        nonfinite={p: jnp.zeros((), jnp.int32) for p in self.phases},
        first_nonfinite=jnp.full((2,), -1, jnp.int32))

  def state_shardings(self, state: TrainState) -> Any:
    """Shardings of every leaf: replicated, or over 'fsdp' for large leaves."""
    return mesh_lib.tree_shardings(state, self.mesh, fsdp_min_size=self.fsdp_min_size)

  # ----------------------------------------------------------------------------------------
  # Jitted functions.

  def _packed_starts(self, state: TrainState) -> dict[str, tuple[jax.Array, ...]]:
    """Per packed group, `Packing.starts()` as replicated int32 scalars: arguments of the phase
    updates, so that unpacking compiles one kernel per leaf size (see onestep_jax.train.packing).
    """
    if self._starts is None:
      repl = mesh_lib.replicated(self.mesh)
      scalar = lambda v: jax.make_array_from_callback((), repl, lambda _: np.int32(v))
      self._starts = {n: tuple(scalar(v) for v in packing.starts()) for n, packing in
                      ((n, self._packing(p)) for n, p in state.params.items())
                      if packing is not None}
    return self._starts

  def phase_args(self, state: TrainState, batch: Any, repeat: int, handed: Any = None) -> tuple:
    """The arguments of a phase update `_jitted(state, phase)`: `repeat` is the phase's run
    within the step (0, 1, ...); `handed`, for a phase that takes, what its giver handed over
    (the third output of the giver's update)."""
    args = (state, batch, np.int32(repeat), self._packed_starts(state))
    return args if handed is None else args + (handed,)

  def handover_shardings(self, handed: Any) -> Any:
    """Shardings of arrays handed from one phase to another: split like the batch along a
    leading axis of the global batch size, else replicated."""
    return jax.tree.map(lambda x: mesh_lib.batch_sharding(self.mesh)
                        if x.shape[:1] == (self.batch_size,) else mesh_lib.replicated(self.mesh),
                        handed)

  def _phase_update(self, phase: spec.Phase, state: TrainState, batch: Any,
                    repeat: jax.Array, starts: dict[str, tuple[jax.Array, ...]],
                    handed: Any = None) -> tuple:
    """The phase's update of `state`, its metrics and, for a phase that gives, what it hands
    over."""
    index = self._phase_index[phase.name]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
        state.rng, state.step), index), repeat)
    all_params = {**state.frozen, **state.params}
    fixed = {n: jax.lax.stop_gradient(p) for n, p in all_params.items()
             if n not in phase.updates}
    current = {n: state.params[n] for n in phase.updates}

    def objective(sub):
      out = phase.loss_fn({**fixed, **sub}, batch, key,
                          *(() if phase.takes is None else (handed,)))
      if len(out) != 2 + phase.gives:
        raise ValueError(f'Phase {phase.name!r}: loss_fn must return (loss, metrics'
                         f'{", handed" * phase.gives}), got {len(out)} values.')
      loss, metrics, *given = out
      if jnp.shape(loss) != ():
        raise ValueError(f'Phase {phase.name!r}: loss_fn must return a scalar loss, got shape '
                         f'{jnp.shape(loss)}.')
      return loss, (dict(metrics), jax.lax.stop_gradient(given))

    (loss, (metrics, given)), grads = jax.value_and_grad(objective, has_aux=True)(current)
    packings = {n: self._packing(current[n]) for n in phase.updates}
    view = {n: _optimizer_view(current[n], packings[n]) for n in phase.updates}
    grads = {n: _optimizer_view(grads[n], packings[n]) for n in phase.updates}
    new_view, new_opt = {}, {}
    for n in phase.updates:
      step_updates, new_opt[n] = self._tx[n].update(grads[n], state.opt_state[n], view[n])
      new_view[n] = optax.apply_updates(view[n], step_updates)
    # Finite loss, gradient norms and parameter norm imply finite updates and optimizer states.
    # (A per-leaf isfinite reduction over the gradients fuses into the backward pass and made a
    # U-Net step compile for minutes on CPU; the norms are computed for the metrics anyway.)
    grad_norms = {n: optax.tree.norm(grads[n]) for n in phase.updates}
    ok = all_finite((loss, grad_norms, optax.tree.norm(new_view)))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_view = keep(new_view, view)
    new_params = {n: new_view[n] if packings[n] is None
                  else packings[n].unpack(new_view[n], starts[n])
                  for n in phase.updates}
    bad = jnp.logical_not(ok)
    first_bad = jnp.stack([state.step, jnp.int32(index)])
    state = state.replace(
        params={**state.params, **new_params},
        opt_state={**state.opt_state, **keep(new_opt, {n: state.opt_state[n] for n in new_opt})},
        updates={**state.updates, phase.name: state.updates[phase.name] + 1},
        nonfinite={**state.nonfinite,
                   phase.name: state.nonfinite[phase.name] + bad.astype(jnp.int32)},
        first_nonfinite=jnp.where(bad & (state.first_nonfinite[0] < 0), first_bad,
                                  state.first_nonfinite))
    metrics = {'loss': loss, **metrics,
               **{f'grad_norm/{n}': v for n, v in grad_norms.items()}}
    if not phase.gives:
      return state, metrics
    return state, metrics, jax.lax.with_sharding_constraint(
        given[0], self.handover_shardings(given[0]))

  def _end_step(self, state: TrainState) -> TrainState:
    """EMA updates (EDM: after the optimizer step, with the samples seen before it), step+1."""
    nimg = state.step.astype(jnp.float32) * self.batch_size
    ema = {}
    for n, e in state.ema.items():
      g = self.groups[n]
      beta = ema_beta(nimg=nimg, batch_size=self.batch_size, halflife_nimg=g.ema_halflife_nimg,
                      rampup_ratio=g.ema_rampup_ratio)
      ema[n] = ema_update(e, state.params[n], beta)
    return state.replace(ema=ema, step=state.step + 1)

  def _jitted(self, state: TrainState, phase: Optional[str] = None,
              handed: Any = None) -> Callable:
    """A new jitted update of `phase` (None: the end of step); `handed`: what it takes (see
    `phase_args`). `_executable` compiles it once and keeps only the executable: dropping the
    jit drops its caches of the traced and lowered program (52 MB of live memory for
    Diff-Instruct's two U-Net phases, benchmarks/memory_breakdown.py)."""
    state_sh = self.state_shardings(state)
    if phase is None:
      return xla_cpu.jit(self._end_step, in_shardings=(state_sh,), out_shardings=state_sh,
                         donate_argnums=0)
    repl = mesh_lib.replicated(self.mesh)
    in_shardings = (state_sh, mesh_lib.batch_sharding(self.mesh), repl, repl)
    if self.phases[phase].takes is not None:
      in_shardings += (self.handover_shardings(handed),)
    # what a phase hands over is placed inside it (see _phase_update)
    out_shardings = (state_sh, repl) + (None,) * self.phases[phase].gives
    return xla_cpu.jit(functools.partial(self._phase_update, self.phases[phase]),
                       in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=0)

  def train_step(self, state: TrainState, batch: Any, *, step: int,
                 grad_norms: Optional[list] = None
                 ) -> tuple[TrainState, dict[str, dict[str, jax.Array]]]:
    """One trainer step on a global batch; `step` (host int) must equal `state.step`.

    `batch` holds global arrays (see `mesh.global_batch`); `state`'s buffers are donated.
    Returns the new state and, per phase, the metrics of its last run (device arrays).
    `grad_norms`, if given, receives ('<phase>', '<group>', norm) for every run of every phase
    (device scalars, not fetched), so that `train` can log each window's largest norm.
    """
    metrics, handed = {}, {}
    schedule = spec.stage_at(self.stages, step).schedule
    if self.parallel_compile:
      self._compile_at_once(self._stage_programs(step), state, batch)
    if self._temporaries is not None:
      self._one_set_of_temporaries(step, state, batch)
    for name, repeats in schedule:
      phase = self.phases[name]
      for r in range(repeats):
        args = self.phase_args(state, batch, r, handed.get(phase.takes))
        executable = self._executable(name, *args)
        before = self._allocated_before(name)
        state, metrics[name], *given = executable(*args)
        if phase.gives:
          handed[name] = given[0]
        self._pace(metrics[name])
        if before is not None:
          self._await_temporaries(name, before, metrics[name])
        if grad_norms is not None:
          grad_norms.extend((name, g, metrics[name][f'grad_norm/{g}'])
                            for g in self.phases[name].updates)
    return self._executable(None, state)(state), metrics

  def preload(self, step: int) -> None:
    """Starts reading, in a background thread, the executables that the executable cache holds
    for the phases of the stage at `step` and the end of step, so that a resumed run loads them
    while it makes its state (warm start of the EDM reference step: docs/RESULTS.md, "Loading
    the phases during the initialisation"). Without an executable cache, nothing."""
    if self.executable_cache is not None:
      self.executable_cache.preload([_program_name(p) for p in self._stage_programs(step)])

  def _program_args(self, phase: Optional[str], state: TrainState, batch: Any) -> tuple:
    """The arguments `phase` (None: the end of step) is compiled for; what a phase takes, as
    shapes from its giver's program (which this compiles first if need be)."""
    if phase is None:
      return (state,)
    giver = self.phases[phase].takes
    if giver is None:
      return self.phase_args(state, batch, 0)
    if giver not in self._handed_shapes:
      self._executable(giver, *self._program_args(giver, state, batch))
    shapes = self._handed_shapes[giver]
    return self.phase_args(state, batch, 0,
                           _placed_shapes(shapes, self.handover_shardings(shapes)))

  def _keep(self, phase: Optional[str], program: Any) -> None:
    """Notes what a giving phase's `program` (lowered or compiled) hands over."""
    if phase is not None and self.phases[phase].gives:
      self._handed_shapes[phase] = program.out_info[2]

  def _stage_programs(self, step: int) -> list[Optional[str]]:
    """The phases the stage at `step` runs, in order, then None for the end of step."""
    return [name for name, _ in spec.stage_at(self.stages, step).schedule] + [None]

  def _executable(self, phase: Optional[str], *args) -> Callable:
    """The executable of `phase` for `args`: from the executable cache, or `_jitted(phase)`
    traced and lowered without garbage collection (see `_gc_paused`) and compiled ahead of its
    first run, after which the memory the compiler freed is handed back to the OS: malloc keeps
    it, and the first run's buffers came on top of it (peak RSS of the EDM reference step
    1.5 GB -> 1.2 GB with glibc, 1.27 GB -> 0.99 GB with tcmalloc)."""
    if phase not in self._executables:
      compiled = load_or_compile(self.executable_cache, _program_name(phase), args,
                                 lambda: self._lowered(phase, args))
      self._keep(phase, compiled)
      self._executables[phase] = compiled
      release_freed_memory()
    return self._executables[phase]

  def _cached(self, phase: Optional[str], args: tuple) -> Optional[jax.stages.Compiled]:
    if self.executable_cache is None:
      return None
    return self.executable_cache.load(_program_name(phase), args)

  def _compiled(self, phase: Optional[str], args: tuple,
                lowered: jax.stages.Lowered) -> jax.stages.Compiled:
    if self.executable_cache is None:
      return lowered.compile()
    return self.executable_cache.compile(_program_name(phase), args, lowered)

  def _lowered(self, phase: Optional[str], args: tuple) -> jax.stages.Lowered:
    """`_jitted(phase)` traced and lowered for `args` without garbage collection."""
    with _gc_paused():
      return self._jitted(args[0], phase, *args[4:]).lower(*args)

  def _compile_at_once(self, phases: Sequence[Optional[str]], state: TrainState,
                       batch: Any) -> None:
    """Compiles those of `phases` (None: the end of step) neither compiled yet nor in the
    executable cache, concurrently: each is traced and lowered in turn (Python, holding the GIL)
    and handed to a thread that compiles it (XLA, without the GIL) while the next is traced."""
    waiting = []
    for p in phases:  # in stage order: a phase that gives comes before one that takes from it
      if p in self._executables:
        continue
      takes = None if p is None else self.phases[p].takes
      if takes is None or takes in self._handed_shapes:  # else its arguments are not known yet
        compiled = self._cached(p, self._program_args(p, state, batch))
        if compiled is not None:
          self._keep(p, compiled)
          self._executables[p] = compiled
          continue
      waiting.append(p)
    if len(waiting) < 2:
      return
    with concurrent.futures.ThreadPoolExecutor(len(waiting)) as pool:
      compiling = {}
      for p in waiting:
        args = self._program_args(p, state, batch)
        lowered = self._lowered(p, args)
        self._keep(p, lowered)
        compiling[p] = pool.submit(self._compiled, p, args, lowered)
      self._executables.update((p, c.result()) for p, c in compiling.items())
    release_freed_memory()

  def _one_set_of_temporaries(self, step: int, state: TrainState, batch: Any) -> None:
    """Compiles (or loads) every program of the stage at `step`, then mallocs and frees one block
    of its largest phase's XLA temporaries, so that each phase's temporaries fit in that one free
    span (placed apart, as the first step placed them without it, both sets stay resident)."""
    programs = self._stage_programs(step)
    if all(p in self._temporaries for p in programs):
      return
    for p in programs:
      executable = self._executable(p, *self._program_args(p, state, batch))
      try:
        self._temporaries[p] = int(executable.memory_analysis().temp_size_in_bytes)
      except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
        self._temporaries[p] = 0
    largest = max(self._temporaries[p] for p in programs)
    if largest >= LARGE_TEMPORARIES:
      malloc_and_free(largest)

  def _allocated_before(self, phase: str) -> Optional[int]:
    """malloc's allocated bytes before a run of `phase` if `_await_temporaries` waits for it
    (large temporaries, one CPU device under tcmalloc), else None."""
    if self._temporaries is None or self._temporaries[phase] < LARGE_TEMPORARIES:
      return None
    return allocated_bytes()

  def _await_temporaries(self, phase: str, before: int, outputs: Any) -> None:
    """One CPU device under tcmalloc: after a phase with large XLA temporaries, waits for its
    outputs and then (at most TEMPORARIES_WAIT_S) until XLA has freed its temporaries, which it
    does just after marking the outputs ready, so that the next phase reuses their pages. Without
    the wait the next phase allocates its own beside them, and tcmalloc keeps both sets resident
    (the Diff-Instruct reference iteration 1,174 -> 964 MB; docs/RESULTS.md, "One set of
    temporaries, kept")."""
    jax.block_until_ready(outputs)
    limit = before + self._temporaries[phase] // 2
    deadline = time.perf_counter() + TEMPORARIES_WAIT_S
    while allocated_bytes() > limit and time.perf_counter() < deadline:
      time.sleep(1e-4)

  def _pace(self, outputs: Any) -> None:
    """Waits for the previous phase's outputs when the devices share a host thread pool."""
    if self._paced:
      jax.block_until_ready(self._in_flight)
      self._in_flight = outputs

  # ----------------------------------------------------------------------------------------
  # Loop.

  def check_finite(self, state: TrainState) -> dict[str, int]:
    """Non-finite counts per phase; raises NonFiniteError under the 'stop' policy."""
    counts = {p: int(host_value(c)) for p, c in state.nonfinite.items()}
    if self.nonfinite == 'stop' and any(counts.values()):
      step, index = (int(v) for v in host_value(state.first_nonfinite))
      raise NonFiniteError(
          f'Non-finite loss, gradient or update in phase {list(self.phases)[index]!r} at step '
          f'{step} (nonfinite policy "stop"); that update was not applied and no checkpoint '
          f'was written after it.')
    return counts

  def train(self, state: TrainState, *, get_batch: GetBatch, num_steps: int,
            checkpointer: Optional[Checkpointer] = None, save_every: Optional[int] = None,
            log_every: int = 100, metric_writer: Optional[MetricWriter] = None,
            progress: bool = True,
            after_step: Optional[Callable[[TrainState, int], None]] = None) -> TrainState:
    """Trains from `state.step` up to `num_steps`, then saves a final checkpoint.

    Args:
      state: from `init_state` or `Checkpointer.restore`.
      get_batch: `get_batch(step, process_index, process_count)` returns this process's
        `batch_size // process_count` rows of global batch number `step` as numpy; it must be
        deterministic in `step` so a resumed run sees the same data.
      num_steps: total number of steps (not the number still to run).
      checkpointer: where to save every `save_every` steps and at the end (None: never).
      log_every: metrics are fetched, written and shown every `log_every` steps.
      metric_writer: receives '<phase>/<metric>' values, rates and non-finite counts.
      progress: show a tqdm bar (process 0 only).
      after_step: called with the new state and step number after every step, once that
        step's checkpoint (if any) is saved; e.g. a periodic evaluation. It must not keep the
        state's arrays: the next step donates them.

    On SIGTERM the current step finishes, a checkpoint is saved and `Preempted` is raised.
    Pending saves always finish before this returns or raises.
    """
    start = int(host_value(state.step))
    n_proc, p_index = jax.process_count(), jax.process_index()
    if self.batch_size % n_proc:
      raise ValueError(f'batch_size {self.batch_size} is not divisible by the '
                       f'{n_proc} processes.')
    bar = tqdm.tqdm(total=num_steps, initial=start, disable=not progress or p_index != 0,
                    dynamic_ncols=True)
    last_log_time, last_log_step = time.time(), start
    step, grad_norms = start, []
    try:
      with StopOnSigterm() as sigterm:
        while step < num_steps:
          local = get_batch(step, p_index, n_proc)
          self._check_local_batch(local, n_proc)
          state, metrics = self.train_step(state, mesh_lib.global_batch(local, self.mesh),
                                            step=step, grad_norms=grad_norms)
          step += 1
          bar.update(1)
          at_log = step % log_every == 0 or step == num_steps
          if at_log:
            values = self._log(state, metrics, step=step, since=(last_log_step, last_log_time),
                               grad_norms=grad_norms, metric_writer=metric_writer)
            grad_norms = []
            bar.set_postfix({k: f'{v:.4g}' for k, v in values.items() if k.endswith('/loss')})
            last_log_time, last_log_step = time.time(), step
          if sigterm.should_stop(at_log):
            self._save(state, checkpointer)
            raise Preempted(f'step {step}')
          if checkpointer is not None and save_every and step % save_every == 0:
            self._save(state, checkpointer)
          if after_step is not None:
            after_step(state, step)
        self._save(state, checkpointer)
    finally:
      bar.close()
      if checkpointer is not None:
        checkpointer.wait()
    return state

  def _check_local_batch(self, local: Any, n_proc: int) -> None:
    rows = self.batch_size // n_proc
    for path, x in jax.tree_util.tree_flatten_with_path(local)[0]:
      if np.shape(x)[:1] != (rows,):
        raise ValueError(f'get_batch returned leaf {jax.tree_util.keystr(path)} of shape '
                         f'{np.shape(x)}; expected {rows} rows (batch_size {self.batch_size} '
                         f'over {n_proc} processes).')

  def _log(self, state: TrainState, metrics: Mapping[str, Mapping[str, jax.Array]], *,
           step: int, since: tuple[int, float], grad_norms: Sequence[tuple[str, str, jax.Array]],
           metric_writer: Optional[MetricWriter]) -> dict[str, float]:
    values = {f'{p}/{k}': float(host_value(v)) for p, m in metrics.items() for k, v in m.items()}
    values.update(self._window_norms(grad_norms))
    counts = self.check_finite(state)
    elapsed = max(time.time() - since[1], 1e-9)
    values['steps_per_sec'] = (step - since[0]) / elapsed
    values['samples_per_sec'] = values['steps_per_sec'] * self.batch_size
    values.update({f'nonfinite/{p}': c for p, c in counts.items()})
    if metric_writer is not None:
      metric_writer.write(step, values)
    return values

  def _window_norms(self, grad_norms: Sequence[tuple[str, str, jax.Array]]) -> dict[str, float]:
    """Per phase and group, the largest gradient norm of the updates since the last log
    ('<phase>/grad_norm_max/<group>'; 'grad_norm/<group>' is the last update's alone) and, for a
    group with `clip_norm`, the fraction of those updates the clip shortened
    ('<phase>/clipped/<group>'): what one needs to choose `clip_norm`."""
    window = collections.defaultdict(list)
    for phase, group, norm in grad_norms:
      window[phase, group].append(float(host_value(norm)))
    values = {}
    for (phase, group), norms in window.items():
      values[f'{phase}/grad_norm_max/{group}'] = max(norms)
      clip = self.groups[group].clip_norm
      if clip is not None:
        values[f'{phase}/clipped/{group}'] = float(np.mean(np.asarray(norms) > clip))
    return values

  def _save(self, state: TrainState, checkpointer: Optional[Checkpointer]) -> None:
    if checkpointer is not None:
      self.check_finite(state)
      checkpointer.save(state, optimizer_layout=self.optimizer_layout(state.params))

