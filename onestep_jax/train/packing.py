"""One optimizer update for a group's many leaves: the trainer's packed parameter layout.

An optax update over a U-Net's ~200 leaves compiles to about ten kernels per leaf (the moments,
the step, the skip of non-finite updates, the norms): on CPU, 2,140 of the EDM reference step's
3,450 kernels and about 3 s of its compile. `Packing` concatenates the small leaves into one
vector and leaves the others as they are, so the optimizer sees `(small leaves packed, [large
leaves])`: the leaves below the trainer's `fsdp_min_size` (those an 'fsdp' mesh replicates), or
every leaf on a CPU mesh without an 'fsdp' axis (`trainer.packed_size_limit`: there each large
leaf's update was a YNNPACK fusion for XLA:CPU to build at a program's first run and to rebuild
when it loads one; packing them took a fifth off the EDM reference step's first run and loading,
docs/RESULTS.md, "Every leaf in one vector"). Element-wise optimizers and global-norm clipping
compute what they compute per leaf (clipping's norm sums in another order) and large leaves keep
their shardings. A checkpoint records which leaves it packed (`Trainer.optimizer_layout`), so
that `Trainer.restore` converts it to the layout of another mesh or backend. Transforms that read
the tree's structure (optax.masked, multi_transform) need `Trainer(packed_update=False)`.

XLA:CPU compiles one kernel for all the kernels of a program that compute the same thing on the
same shapes, but a slice at a constant offset is a kernel of its own for each offset: the slices
that unpack a U-Net's small leaves made one kernel each to compile. The trainer passes the
offsets in as arguments (`unpack(..., starts=...)`), so the leaves of one size share a kernel
(benchmarks/unpack_offsets.py; docs/RESULTS.md, "Unpacking at offsets the compiler does not see").
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The leaves that checkpoints which do not record their layout packed (before 7 December 2026,
# evening) were those below this size.
MAX_PACKED_SIZE = 2**14


@dataclasses.dataclass(frozen=True)
class Packing:
  """How one group's params tree maps to the optimizer's `(packed, large)` pair."""
  treedef: Any
  shapes: tuple[tuple[int, ...], ...]
  small: tuple[int, ...]  # leaf indices packed into one vector, in tree order (at least one)
  large: tuple[int, ...]  # leaf indices kept as leaves

  @classmethod
  def of(cls, tree: Any, *, max_packed_size: Optional[int] = MAX_PACKED_SIZE
         ) -> Optional['Packing']:
    """Packs the floating-point leaves with fewer than `max_packed_size` elements (None: every
    leaf), if they share one dtype; None if there is no such leaf (or they do not)."""
    shapes = [np.shape(x) for x in jax.tree.leaves(tree)]
    return cls.with_packed(tree, [i for i, s in enumerate(shapes)
                                  if max_packed_size is None or int(np.prod(s)) < max_packed_size])

  @classmethod
  def with_packed(cls, tree: Any, indices: Sequence[int]) -> Optional['Packing']:
    """Packs the leaves at `indices` (in tree order), if they are floating-point of one dtype;
    None if there is none (or they are not)."""
    leaves, treedef = jax.tree.flatten(tree)
    small = tuple(sorted(int(i) for i in indices))
    if len({jnp.result_type(leaves[i]) for i in small}) > 1 or not all(
        jnp.issubdtype(jnp.result_type(leaves[i]), jnp.floating) for i in small):
      small = ()
    if not small:  # nothing to pack (orbax cannot save an empty array)
      return None
    large = tuple(i for i in range(len(leaves)) if i not in small)
    return cls(treedef, tuple(tuple(np.shape(x)) for x in leaves), small, large)

  def pack(self, tree: Any) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    leaves = jax.tree.leaves(tree)
    packed = jnp.concatenate([jnp.ravel(leaves[i]) for i in self.small])
    return packed, tuple(leaves[i] for i in self.large)

  def starts(self) -> tuple[int, ...]:
    """Where each packed leaf starts in the packed vector, in the order of `small`."""
    sizes = [int(np.prod(self.shapes[i])) for i in self.small]
    return tuple(int(x) for x in np.cumsum([0] + sizes[:-1]))

  def unpack(self, packed_pair: tuple[jax.Array, tuple[jax.Array, ...]],
             starts: Optional[tuple[Any, ...]] = None) -> Any:
    """The tree of `packed_pair`. `starts`: `self.starts()` (the default), or the same as int32
    scalars that are arguments of the jitted function, so that the compiler does not see them
    (see the module's doc)."""
    packed, large = packed_pair
    leaves = [None] * len(self.shapes)
    for i, start in zip(self.small, self.starts() if starts is None else starts):
      size = int(np.prod(self.shapes[i]))
      leaves[i] = jax.lax.dynamic_slice_in_dim(packed, start, size).reshape(self.shapes[i])
    for i, x in zip(self.large, large):
      leaves[i] = x
    return jax.tree.unflatten(self.treedef, leaves)
