"""Optimiser transforms alone, in tests."""
import numpy as np


def successive_updates(opt, params, grads, num: int) -> np.ndarray:
  """The updates [num, ...] of leaf 'w' that `num` steps of `opt` make with the same `grads`."""
  state, out = opt.init(params), []
  for _ in range(num):
    u, state = opt.update(grads, state, params)
    out.append(np.asarray(u['w']))
  return np.stack(out)
