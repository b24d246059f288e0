"""Final evaluation of token models (masked diffusion): metrics.json entries
`<model>/<metric>@<steps>` for sample quality and `<model>/nelbo` on held-out sequences.

- `sample_nll`: exact NLL per token of the samples under a source with a known likelihood
  (`dataset.log_likelihood`, e.g. the Markov chain).
- `entropy`: unigram entropy of each sample's tokens (nats), averaged over samples; it falls when
  a sampler collapses to low temperature, which lowers sample NLL and perplexity for the wrong
  reason (Zheng et al. 2024, arXiv 2409.02908), so it stands beside them.
- `gen_ppl`: generative perplexity, exp of the mean NLL per token of the samples under an
  autoregressive evaluator (an 'ar' run, `eval.ar_evaluator`), when one is given.
- `nelbo`: the model's NELBO per token on held-out data (an upper bound on its NLL).
Data floors `data/<metric>_floor` measure held-out data the same way; `data/sample_nll_exact` is
the source's exact entropy per token when it is known. Samples of data with a tokenizer are
also written as text (save_sample_texts).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import jax
import numpy as np

from onestep_jax.atomic import atomic_path
from onestep_jax.discrete.autoregressive import Evaluator, generative_perplexity
from onestep_jax.methods.base import Generator


def unigram_entropy(tokens: np.ndarray) -> float:
  """Mean over sequences [N, L] of the entropy (nats) of each sequence's token frequencies."""
  tokens = np.asarray(tokens)
  counts = np.stack([np.bincount(row, minlength=int(tokens.max()) + 1) for row in tokens])
  p = counts / tokens.shape[1]
  return float(np.mean(-np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0.0), -1)))


def sample_metrics(tokens: np.ndarray, dataset,
                   evaluator: Optional[Evaluator] = None) -> dict[str, float]:
  """entropy, sample_nll (per token) when the data's likelihood is known, and gen_ppl when an
  evaluator is given."""
  out = {'entropy': unigram_entropy(tokens)}
  if hasattr(dataset, 'log_likelihood'):
    out['sample_nll'] = float(-np.mean(dataset.log_likelihood(tokens)) / tokens.shape[1])
  if evaluator is not None:
    out['gen_ppl'] = generative_perplexity(evaluator, tokens)
  return out


def load_ar_evaluator(path: str, dataset) -> Optional[Evaluator]:
  """The evaluator of an 'ar' run at `path` ('' = none), checked against the data's vocabulary."""
  if not path:
    return None
  from onestep_jax.methods.autoregressive import load_evaluator
  evaluator = load_evaluator(path)
  if evaluator.bos_index != dataset.vocab_size:
    raise ValueError(f'AR evaluator {path!r} models {evaluator.bos_index} token ids but dataset '
                     f'{dataset.name!r} has {dataset.vocab_size}')
  return evaluator


def save_sample_texts(samples: Mapping[str, tuple[Generator, np.ndarray, float]], *,
                      workdir: str, tokenizer) -> list[str]:
  """samples_<name>.txt of each model: its samples decoded by the data's tokenizer, each under a
  '=== sample <i> ===' line; the paths."""
  paths = []
  for name, (_, x, _) in samples.items():
    path = os.path.join(workdir, f'samples_{name}.txt')
    with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(f'=== sample {i} ===\n{tokenizer.decode(row)}\n' for i, row in enumerate(x))
    paths.append(path)
  return paths


def held_out_nelbo(nelbo_fn, params: Mapping[str, Any], tokens: np.ndarray, *, batch_size: int,
                   repeats: int, seed: int) -> float:
  """Mean NELBO per token over `repeats` Monte Carlo draws on every held-out sequence."""
  size = min(batch_size, len(tokens))
  fn = jax.jit(nelbo_fn)
  key = jax.random.PRNGKey(seed)
  total, count = 0.0, 0
  for r in range(repeats):
    for i in range(0, len(tokens) - size + 1, size):
      values = fn(params, tokens[i:i + size], jax.random.fold_in(key, r * len(tokens) + i))
      total += float(np.sum(np.asarray(values, np.float64)))
      count += size
  return total / (count * tokens.shape[1])


def evaluate(*, samples: Mapping[str, tuple[Generator, np.ndarray, float]],
             reference: tuple[np.ndarray, np.ndarray], dataset, nelbo_fns: Mapping[str, Any],
             params: Mapping[str, Any], batch_size: int, seed: int,
             nelbo_repeats: int = 4, evaluator: Optional[Evaluator] = None,
             floors: bool = True) -> dict[str, float]:
  """Every metric above for every generator, its speed, the NELBOs and (with `floors`) the data
  floors; `evaluator` (from `load_ar_evaluator`) adds gen_ppl."""
  ref, ref2 = reference
  metrics = {}
  if floors:
    metrics = {f'data/{k}_floor': v for k, v in sample_metrics(ref2, dataset, evaluator).items()}
  if floors and hasattr(dataset, 'expected_nll'):
    metrics['data/sample_nll_exact'] = dataset.expected_nll()
  for g, x, seconds in samples.values():
    metrics.update({f'{g.model}/{k}@{g.nfe}': v
                    for k, v in sample_metrics(x, dataset, evaluator).items()})
    metrics[f'{g.model}/samples_per_s@{g.nfe}'] = len(x) / seconds
    metrics[f'{g.model}/tokens_per_s@{g.nfe}'] = x.size / seconds
  for model, fn in nelbo_fns.items():
    metrics[f'{model}/nelbo'] = held_out_nelbo(fn, params, ref, batch_size=batch_size,
                                               repeats=nelbo_repeats, seed=seed)
  return metrics
