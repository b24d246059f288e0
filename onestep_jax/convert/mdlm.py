"""Import / export of the diffusion transformer of MDLM and SDTT checkpoints (MDLM: Sahoo et al.
2024, arXiv 2406.07524, kuleshov-group/mdlm `models/dit.py`; SDTT: arXiv 2410.21035).

A checkpoint is a PyTorch-named state_dict of that backbone (`vocab_embed.embedding`,
`blocks.<i>.attn_qkv.weight`, ..., `rotary_emb.inv_freq`; a leading `backbone.`, as in the
wrappers of MDLM and SDTT, is dropped) plus its settings:
- `.npz`: `state_dict/<name>` arrays and `meta_json` (tests/fixtures/README.md);
- `.safetensors`: the arrays, with the settings as JSON in the file's metadata entry `meta_json`
  or, failing that, in `<name>.json` or `config.json` beside it.
The settings are `{"model": {"hidden_size", "cond_dim", "n_heads", "n_blocks"}, "vocab_size",
"mask_index"}`; a flat dict with the same keys works too, `hidden_dim` standing for
`hidden_size`; without `mask_index` the mask is the last token id (MDLM's convention). Linear
weights are transposed once, here; the token embedding keeps its [vocab, hidden] layout.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from onestep_jax.convert.torch_layout import (PathLike, check_keys, read_checkpoint,
                                              read_state_dict_npz, write_state_dict_npz)
from onestep_jax.discrete.process import subs_log_probs
from onestep_jax.nets.dit import DiT, rotary_inv_freq

MODEL_KEYS = ('hidden_size', 'cond_dim', 'n_heads', 'n_blocks')
INV_FREQ = 'rotary_emb.inv_freq'
_WRAPPER_PREFIX = 'backbone.'
_FLAX_TO_TORCH_LEAF = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                       'embedding': 'embedding'}


def _torch_name(path: tuple[str, ...]) -> str:
  """('blocks_0', 'mlp_2', 'kernel') -> 'blocks.0.mlp.2.weight'."""
  *modules, leaf = path
  return '.'.join([re.sub(r'_(\d+)$', r'.\1', m) for m in modules] + [_FLAX_TO_TORCH_LEAF[leaf]])


def _to_flax(path, a: np.ndarray) -> np.ndarray:
  return a.T if path[-1] == 'kernel' else a


@dataclasses.dataclass(frozen=True, eq=False)
class MDLMModel:
  """A DiT with its parameters and mask id: raw logits and SUBS log-probabilities.

  Both methods run compiled (one compilation per input shape); inside a jitted function of your
  own, pass `params=` explicitly so that the weights are arguments, not constants.
  """
  module: DiT
  params: Any
  mask_index: int

  @property
  def vocab_size(self) -> int:
    return self.module.vocab_size

  @property
  def network_kwargs(self) -> dict[str, Any]:
    """Keyword arguments that rebuild `module` with `DiT(**kwargs)`."""
    return {f.name: getattr(self.module, f.name) for f in dataclasses.fields(self.module)
            if f.name not in ('parent', 'name')}

  @functools.cached_property
  def _apply(self):
    return jax.jit(self.module.apply)

  def logits(self, tokens, sigma=None, *, params=None):
    """The backbone's raw logits [B, L, V] of tokens [B, L] at noise level sigma [B] (None: 0)."""
    sigma = None if sigma is None else jnp.asarray(sigma, jnp.float32)
    return self._apply({'params': self.params if params is None else params},
                       jnp.asarray(tokens, jnp.int32), sigma)

  def subs_log_probs(self, tokens, sigma=None, *, params=None):
    """SUBS log-probabilities [B, L, V]: NEG_INF on the mask token and, at unmasked positions,
    on every token but their own."""
    return subs_log_probs(self.logits(tokens, sigma, params=params), jnp.asarray(tokens),
                          mask_index=self.mask_index)


def _settings(meta: Mapping[str, Any], where: str) -> tuple[dict[str, int], int, int]:
  """(DiT settings, vocab_size, mask_index) from a meta dict in either layout."""
  model = dict(meta.get('model', meta))
  if 'hidden_size' not in model and 'hidden_dim' in model:
    model['hidden_size'] = model.pop('hidden_dim')
  missing = [k for k in MODEL_KEYS if k not in model]
  if missing or 'vocab_size' not in meta:
    raise ValueError(f'the settings of {where} lack {missing or ["vocab_size"]}; expected '
                     f'{list(MODEL_KEYS)} (under "model" or at the top) and vocab_size')
  kwargs = {k: int(model[k]) for k in MODEL_KEYS}
  if 'mlp_ratio' in model:
    kwargs['mlp_ratio'] = int(model['mlp_ratio'])
  vocab_size = int(meta['vocab_size'])
  mask_index = int(meta.get('mask_index', vocab_size - 1))
  if not 0 <= mask_index < vocab_size:
    raise ValueError(f'mask_index {mask_index} of {where} is not a token id of a vocabulary '
                     f'of {vocab_size}')
  return kwargs, vocab_size, mask_index


def _layout(module: DiT) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """PyTorch name -> (Flax path, PyTorch shape) of every parameter of `module`."""
  variables = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 2), jnp.int32)),
                             jax.random.key(0))
  return {_torch_name(path): (path, leaf.shape[::-1] if path[-1] == 'kernel' else leaf.shape)
          for path, leaf in traverse_util.flatten_dict(variables['params']).items()}


def from_state_dict(state_dict: Mapping[str, np.ndarray], *, model: Mapping[str, int],
                    vocab_size: int, mask_index: Optional[int] = None) -> MDLMModel:
  """An MDLMModel from a PyTorch-named state_dict of MDLM's DIT with settings `model`
  (hidden_size, cond_dim, n_heads, n_blocks[, mlp_ratio]); errors name the parameter."""
  state_dict = {k[len(_WRAPPER_PREFIX):] if k.startswith(_WRAPPER_PREFIX) else k: v
                for k, v in state_dict.items()}
  module = DiT(vocab_size=vocab_size, **model)
  layout = _layout(module)
  check_keys(state_dict, [*layout, INV_FREQ], f'the DiT state_dict (settings {dict(model)}, '
             f'vocab_size {vocab_size})')
  flat = {}
  for name, (path, shape) in layout.items():
    value = np.asarray(state_dict[name], np.float32)
    if value.shape != shape:
      raise ValueError(f'shape mismatch for {name}: the settings {dict(model)} with vocab_size '
                       f'{vocab_size} need {shape}, the state_dict has {value.shape}')
    flat[path] = jnp.asarray(_to_flax(path, value))
  inv_freq = np.asarray(rotary_inv_freq(module.hidden_size // module.n_heads))
  found = np.asarray(state_dict[INV_FREQ], np.float32)
  if found.shape != inv_freq.shape or not np.allclose(found, inv_freq, rtol=1e-6, atol=0):
    raise ValueError(f'{INV_FREQ} of shape {found.shape} does not match head size '
                     f'{module.hidden_size // module.n_heads} (base 10000) of the settings')
  return MDLMModel(module=module, params=traverse_util.unflatten_dict(flat),
                   mask_index=vocab_size - 1 if mask_index is None else mask_index)


def to_state_dict(module: DiT, params: Any) -> dict[str, np.ndarray]:
  """PyTorch-named state_dict (rotary buffer included) of a DiT and its parameters."""
  layout = _layout(module)
  flat = {_torch_name(p): (p, v) for p, v in traverse_util.flatten_dict(params).items()}
  check_keys(flat, layout, 'the DiT params')
  out = {}
  for name, (path, value) in flat.items():
    value = _to_flax(path, np.asarray(value, np.float32))  # the transpose is its own inverse
    if value.shape != layout[name][1]:
      raise ValueError(f'shape mismatch for {name}: the settings need {layout[name][1]}, the '
                       f'params have {value.shape}')
    out[name] = np.ascontiguousarray(value)
  out[INV_FREQ] = np.asarray(rotary_inv_freq(module.hidden_size // module.n_heads))
  return out


def save(path: PathLike, source, *, mask_index: Optional[int] = None) -> None:
  """Writes an MDLMModel, or a `(DiT, params)` pair, as `.npz` or `.safetensors` (by suffix) in
  the layout `load` reads."""
  if isinstance(source, MDLMModel):
    module, params, mask_index = source.module, source.params, source.mask_index
  else:
    module, params = source
    mask_index = module.vocab_size - 1 if mask_index is None else mask_index
  model = {k: getattr(module, k) for k in (*MODEL_KEYS, 'mlp_ratio')}
  meta = {'model': model, 'vocab_size': module.vocab_size, 'mask_index': mask_index}
  state_dict = to_state_dict(module, params)
  path = pathlib.Path(path)
  if path.suffix == '.npz':
    write_state_dict_npz(path, state_dict, meta)
  elif path.suffix == '.safetensors':
    from safetensors.numpy import save_file
    save_file(state_dict, str(path), metadata={'meta_json': json.dumps(meta)})
  else:
    raise ValueError(f'unsupported suffix {path.suffix!r} of {path}; valid: .npz, .safetensors')


def _read_safetensors(path: pathlib.Path):
  from safetensors import safe_open
  from safetensors.numpy import load_file
  with safe_open(str(path), framework='np') as f:
    metadata = f.metadata() or {}
  if 'meta_json' in metadata:
    return load_file(str(path)), json.loads(metadata['meta_json'])
  for side in (path.with_suffix('.json'), path.parent / 'config.json'):
    if side.is_file():
      return load_file(str(path)), json.loads(side.read_text())
  raise ValueError(f'{path} has no meta_json metadata and no {path.with_suffix(".json").name} '
                   'or config.json beside it holding the model settings')


_READERS = {'.npz': read_state_dict_npz, '.safetensors': _read_safetensors}


def load(path: PathLike) -> MDLMModel:
  """An MDLMModel from an `.npz` or `.safetensors` checkpoint in the layout above."""
  state_dict, meta = read_checkpoint(path, _READERS, 'MDLM')
  model, vocab_size, mask_index = _settings(meta, str(path))
  return from_state_dict(state_dict, model=model, vocab_size=vocab_size, mask_index=mask_index)
