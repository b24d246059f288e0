"""The official PyTorch code at our reference setting, timed as benchmarks/train_step.py and
benchmarks/distill_step.py time ours, for the side by sides of docs/RESULTS.md (issues 6 and 7).

  <torch venv>/bin/python benchmarks/official_side_by_side.py --row=edm|sid|dmd2|passes
      --repo=<checkout> [--steps=15] [--warmup=3] [--threads=2] [--out=<file.json>]
  python benchmarks/official_side_by_side.py --summary=<dir>

One row per process. It runs under PyTorch, which this library does not depend on, with a checkout
of the official repository that the row imports: NVlabs/edm for `edm`, `dmd2` and `passes`,
mingyuanzhou/SiD for `sid` (git clone them, or use `fetch`'s mirrors). Nothing of theirs is copied
here; the script imports:
- `edm`: EDM's `training.networks.EDMPrecond` and `training.loss.EDMLoss`; a step is the loop body
  of EDM's `training/training_loop.py` (loss summed and scaled by 1 / batch, NaNs of the gradient
  zeroed, Adam at EDM's learning rate with its ramp-up, EMA);
- `sid`: SiD's `training.networks.EDMPrecond` and `training.sid_loss.SID_EDMLoss`; an iteration is
  the body of SiD's `training/sid_training_loop.py`: the fake score's update on the generator's
  samples (drawn without gradient), then the generator's with alpha 1.2, tmax 800, sigma_init 2.5,
  Adam with betas (0, 0.999), and the generator's EMA;
- `dmd2`: EDM's `EDMPrecond` as DMD2's teacher, fake score and generator. DMD2's
  `main/edm/edm_guidance.py` builds its losses around a teacher it loads from a URL, so they are
  written here from the paper (Yin et al. 2024, arXiv 2405.14867, Sec. 4 and Eq. 2 of DMD,
  arXiv 2311.18828) with the repository's settings: an iteration is `train_one_step` of
  `main/edm/train_edm.py` at update ratio 1 without the GAN head: the generator's turn (one pass
  from noise at sigma 80, the distribution-matching loss at one of 1,000 Karras levels between 2%
  and 98%, AdamW, gradient norm clipped at 10), then the fake score's turn on the same samples,
  detached (denoising loss at any of the 1,000 levels, weight 1 / sigma^2 + 1 / sigma_data^2);
- `passes`: the three passes of benchmarks/network_passes.py through EDM's network (`--steps`
  timed calls of each).

The network is the reference of benchmarks/train_step.py: DDPM++ (SongUNet) 32x32x3, 32 channels,
channel_mult (1, 2, 2), one block per resolution, attention at 16x16, 10 classes, augment_dim 9,
batch 16, float32, random images and weights. Each process times `--steps` steps after `--warmup`
untimed ones and a 2048^3 float32 matmul in PyTorch, and writes the medians, the peak RSS and
every step's time as JSON.

`--summary=<dir>` pairs `official_<row>_<round>.json` with our benchmarks' JSON of the same round,
`ours_<row>_<round>.json` (`python benchmarks/network_passes.py --repeats=1 --calls=15 --out=...`
for `passes`, `python benchmarks/train_step.py --only=edm_reference_32x32 --repeats=1
--steps=15 --warmup=3 --out=...` for `edm`, `python benchmarks/distill_step.py --methods=<row>
--repeats=1 --steps=15 --warmup=3 --out=...` for `sid` and `dmd2`, run right after the official
process), prints each round's ratio and writes `<dir>/summary.json`; `parent_<row>_<round>.json`,
the same benchmark at an earlier commit in the same round, is paired too when present.
"""
import argparse
import copy
import json
import os
import resource
import statistics
import sys
import time

ROWS = ('edm', 'sid', 'dmd2', 'passes')
BATCH, RESOLUTION, CHANNELS, CLASSES = 16, 32, 3, 10


def build_network(networks):
  """The reference network: `EDMPrecond` of the official `training.networks` module."""
  return networks.EDMPrecond(img_resolution=RESOLUTION, img_channels=CHANNELS, label_dim=CLASSES,
                             model_type='SongUNet', augment_dim=9, model_channels=32,
                             channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[16],
                             dropout=0.0)


def ema_update(torch, ema, net, beta):
  with torch.no_grad():
    for p_ema, p in zip(ema.parameters(), net.parameters()):
      p_ema.copy_(p.detach().lerp(p_ema, beta))


def zero_nan_gradients(torch, net):
  for p in net.parameters():
    if p.grad is not None:
      torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)


def edm_step_fn(torch, repo_modules):
  """EDM's teacher step (lr 1e-3, ramp-up over 10M images, EMA half-life 500k images)."""
  networks, loss_module = repo_modules('training.networks', 'training.loss')
  net = build_network(networks).train().requires_grad_(True)
  ema = copy.deepcopy(net).eval().requires_grad_(False)
  loss_fn = loss_module.EDMLoss(P_mean=-1.2, P_std=1.2, sigma_data=0.5)
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
  seen = [0]

  def step(images, labels):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(net=net, images=images, labels=labels, augment_pipe=None)
    loss.sum().mul(1.0 / BATCH).backward()
    seen[0] += BATCH
    for group in optimizer.param_groups:
      group['lr'] = 1e-3 * min(seen[0] / 10_000_000, 1)
    zero_nan_gradients(torch, net)
    optimizer.step()
    ema_update(torch, ema, net, 0.5 ** (BATCH / max(min(500_000, seen[0] * 0.05), 1e-8)))
  return step


def sid_step_fn(torch, repo_modules):
  """SiD's iteration: fake-score update, then generator update (alpha 1.2, tmax 800)."""
  networks, sid_loss = repo_modules('training.networks', 'training.sid_loss')
  true_score = build_network(networks).eval().requires_grad_(False)
  fake_score = copy.deepcopy(true_score).train().requires_grad_(True)
  generator = copy.deepcopy(true_score).train().requires_grad_(True)
  generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
  loss_fn = sid_loss.SID_EDMLoss(P_mean=-1.2, P_std=1.2, sigma_data=0.5)
  adam = lambda net: torch.optim.Adam(net.parameters(), lr=1e-5, betas=(0.0, 0.999),  # noqa: E731
                                      eps=1e-8)
  fake_optimizer, generator_optimizer = adam(fake_score), adam(generator)
  init_sigma, no_augment = 2.5, torch.zeros(BATCH, 9)

  def generate(labels):
    z = init_sigma * torch.randn(BATCH, CHANNELS, RESOLUTION, RESOLUTION)
    return generator(z, init_sigma * torch.ones(BATCH, 1, 1, 1), labels, augment_labels=no_augment)

  def step(images, labels):
    del images  # SiD trains on its own samples only
    fake_score.train().requires_grad_(True)
    generator.eval().requires_grad_(False)
    fake_optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(fake_score=fake_score, images=generate(labels), labels=labels, augment_pipe=None)
    loss.sum().mul(1.0 / BATCH).backward()
    fake_score.eval().requires_grad_(False)
    zero_nan_gradients(torch, fake_score)
    fake_optimizer.step()
    generator.train().requires_grad_(True)
    generator_optimizer.zero_grad(set_to_none=True)
    loss = loss_fn.generator_loss(true_score=true_score, fake_score=fake_score,
                                  images=generate(labels), labels=labels, augment_pipe=None,
                                  alpha=1.2, tmax=800)
    loss.sum().mul(1.0 / BATCH).backward()
    generator.eval().requires_grad_(False)
    zero_nan_gradients(torch, generator)
    generator_optimizer.step()
    ema_update(torch, generator_ema, generator, 0.5 ** (BATCH / 500_000))
  return step


def dmd2_step_fn(torch, repo_modules):
  """DMD2's `train_one_step` at update ratio 1, no GAN head (see the module's docstring)."""
  networks, = repo_modules('training.networks')
  real = build_network(networks)
  real.model.map_augment = None  # DMD2 drops the augmentation mapping from all three networks
  real.eval().requires_grad_(False)
  fake = copy.deepcopy(real).train().requires_grad_(True)
  generator = copy.deepcopy(fake).train().requires_grad_(True)
  adamw = lambda net: torch.optim.AdamW(net.parameters(), lr=2e-6, betas=(0.9, 0.999),  # noqa: E731
                                        weight_decay=0.01)
  generator_optimizer, fake_optimizer = adamw(generator), adamw(fake)
  levels, sigma_min, sigma_max, rho, sigma_data, cond_sigma = 1000, 0.002, 80.0, 7.0, 0.5, 80.0
  ramp = torch.linspace(0, 1, levels)
  karras = (sigma_max ** (1 / rho)
            + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
  sigmas = torch.flip(karras, dims=[0])  # index 0 = the smallest sigma
  min_step, max_step = int(0.02 * levels), int(0.98 * levels)

  def noised(x, low, high):
    sigma = sigmas[torch.randint(low, high, [BATCH, 1, 1, 1])]
    return x + sigma * torch.randn_like(x), sigma

  def step(images, labels):
    del images
    noise = cond_sigma * torch.randn(BATCH, CHANNELS, RESOLUTION, RESOLUTION)
    x = generator(noise, torch.full([BATCH], cond_sigma), labels)
    real.requires_grad_(False)
    fake.requires_grad_(False)
    with torch.no_grad():  # distribution matching: the score difference at one noise level
      x_t, sigma = noised(x, min_step, min(max_step + 1, levels))
      p_real, p_fake = x - real(x_t, sigma, labels), x - fake(x_t, sigma, labels)
      grad = torch.nan_to_num((p_real - p_fake) / p_real.abs().mean(dim=[1, 2, 3], keepdim=True))
    loss = 0.5 * torch.nn.functional.mse_loss(x, (x - grad).detach(), reduction='mean')
    loss.backward()
    torch.nn.utils.clip_grad_norm_(generator.parameters(), 10)
    generator_optimizer.step()
    generator_optimizer.zero_grad()
    fake_optimizer.zero_grad()
    fake.requires_grad_(True)
    x = x.detach()  # the fake score's turn, on the same samples
    x_t, sigma = noised(x, 0, levels)
    weight = sigma ** -2 + 1.0 / sigma_data ** 2
    torch.mean(weight * (fake(x_t, sigma, labels) - x) ** 2).backward()
    torch.nn.utils.clip_grad_norm_(fake.parameters(), 10)
    fake_optimizer.step()
    fake_optimizer.zero_grad()
    generator_optimizer.zero_grad()
  return step


STEPS = {'edm': edm_step_fn, 'sid': sid_step_fn, 'dmd2': dmd2_step_fn}
PASSES = ('forward', 'input_gradient', 'full_gradient')


def pass_fns(torch, repo_modules):
  """The passes of benchmarks/network_passes.py through the official network: D(x, sigma);
  the gradient of sum(D(x)^2) in x with the parameters frozen; the same in the parameters and
  x. Same batch, noise levels and labels (sigma = exp(1.2 n - 1.2) of NumPy's seed 0)."""
  import numpy as np
  networks, = repo_modules('training.networks')
  net = build_network(networks)
  rs = np.random.RandomState(0)
  x = torch.tensor(rs.randn(BATCH, RESOLUTION, RESOLUTION, CHANNELS), dtype=torch.float32)
  x = x.permute(0, 3, 1, 2).contiguous()
  sigma = torch.tensor(np.exp(rs.randn(BATCH) * 1.2 - 1.2), dtype=torch.float32)
  labels = torch.eye(CLASSES)[torch.arange(BATCH) % CLASSES]

  def forward():
    with torch.no_grad():
      net(x, sigma, labels)

  def gradient(parameters: bool):
    def run():
      net.requires_grad_(parameters)
      net.zero_grad(set_to_none=True)
      xg = x.clone().requires_grad_(True)
      (net(xg, sigma, labels) ** 2).sum().backward()
    return run
  return {'forward': forward, 'input_gradient': gradient(False), 'full_gradient': gradient(True)}


def timed(fn, steps: int, warmup: int) -> list[float]:
  """Wall seconds of each of `steps` calls of fn(), after `warmup` untimed ones."""
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    fn()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return times


def matmul_seconds(torch, repeats: int = 5) -> float:
  a = torch.randn(2048, 2048)
  b = torch.randn(2048, 2048)
  return statistics.median(timed(lambda: a @ b, repeats, 1))


def _ours(path: str, row: str) -> dict:
  """Our benchmark's entry for `row` (train_step.py's `edm_reference_32x32`, distill_step.py's
  `sid` or `dmd2`; all of network_passes.py's for `passes`) in one of its JSON files."""
  with open(path) as f:
    results = json.load(f)
  return results if row == 'passes' else results['edm_reference_32x32' if row == 'edm' else row]


def summarize(directory: str) -> dict:
  """Per row and round: both sides' step time, matmul and peak RSS, and ours over the official."""
  import glob
  import re
  summary = {}
  for path in sorted(glob.glob(os.path.join(directory, 'official_*_*.json'))):
    row, round_ = re.fullmatch(r'official_(\w+?)_(\w+)\.json', os.path.basename(path)).groups()
    ours_path = os.path.join(directory, f'ours_{row}_{round_}.json')
    if not os.path.isfile(ours_path):
      raise FileNotFoundError(f'{path} has no partner {ours_path}')
    with open(path) as f:
      official = json.load(f)
    ours = _ours(ours_path, row)
    if row == 'passes':
      summary.setdefault(row, []).append({'round': round_, **{
          name: {'official_ms': official[name]['ms'], 'ours_ms': ours[name]['ms'],
                 'ratio': ours[name]['ms'] / official[name]['ms']}
          for name in PASSES if name in ours}})
      continue
    entry = {
        'round': round_, 'official_ms': official['step_s'] * 1e3, 'ours_ms': ours['step_s'] * 1e3,
        'ratio': ours['step_s'] / official['step_s'],
        'official_matmul_ms': official['matmul_s'] * 1e3, 'ours_matmul_ms': ours['matmul_s'] * 1e3,
        'official_peak_rss_mb': official['peak_rss_mb'], 'ours_peak_rss_mb': ours['peak_rss_mb']}
    parent_path = os.path.join(directory, f'parent_{row}_{round_}.json')
    if os.path.isfile(parent_path):  # an earlier commit of ours, timed in the same round
      parent = _ours(parent_path, row)
      entry.update(parent_ms=parent['step_s'] * 1e3,
                   parent_ratio=parent['step_s'] / official['step_s'],
                   parent_peak_rss_mb=parent['peak_rss_mb'])
    summary.setdefault(row, []).append(entry)
  if not summary:
    raise FileNotFoundError(f'no official_<row>_<round>.json in {directory}')
  for row, rounds in summary.items():
    if row == 'passes':
      for name in PASSES:
        if all(name in r for r in rounds):
          each = [r[name] for r in rounds]
          ratios = ', '.join(f"{e['ratio']:.2f}" for e in each)
          print(f"{name:15s} official {statistics.median(e['official_ms'] for e in each):7.1f} ms  "
                f"ours {statistics.median(e['ours_ms'] for e in each):7.1f} ms  per round {ratios}")
      continue
    ratios = [r['ratio'] for r in rounds]
    print(f"{row:5s} official {statistics.median(r['official_ms'] for r in rounds):7.1f} ms  "
          f"ours {statistics.median(r['ours_ms'] for r in rounds):7.1f} ms  per round "
          f"{', '.join(f'{x:.2f}' for x in ratios)}  median {statistics.median(ratios):.2f}  peak "
          f"RSS {statistics.median(r['official_peak_rss_mb'] for r in rounds):.0f} -> "
          f"{statistics.median(r['ours_peak_rss_mb'] for r in rounds):.0f} MB")
    if all('parent_ratio' in r for r in rounds):
      parent = ', '.join(f"{r['parent_ratio']:.2f}" for r in rounds)
      print(f'      parent per round {parent}')
  with open(os.path.join(directory, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--row', choices=ROWS)
  parser.add_argument('--repo',
                      help='checkout of NVlabs/edm (rows edm, dmd2, passes) or mingyuanzhou/SiD '
                           '(sid)')
  parser.add_argument('--summary', default='',
                      help='a directory of official_<row>_<round>.json and ours_<row>_<round>.json')
  parser.add_argument('--steps', type=int, default=15)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  if args.summary:
    try:
      summarize(args.summary)
    except FileNotFoundError as e:
      parser.error(str(e))
    return
  if not args.row or not args.repo:
    parser.error('--row and --repo are needed (or --summary=<dir>)')
  if args.steps < 1 or args.warmup < 0:
    parser.error('--steps must be at least 1 and --warmup at least 0')
  wanted = 'training/sid_loss.py' if args.row == 'sid' else 'training/networks.py'
  if not os.path.isfile(os.path.join(args.repo, wanted)):
    parser.error(f'--repo={args.repo!r} has no {wanted}: give a checkout of '
                 f'{"mingyuanzhou/SiD" if args.row == "sid" else "NVlabs/edm"}')
  try:
    import torch
  except ImportError:
    parser.error('this script runs the official code and needs PyTorch: run it with a Python '
                 'that has torch installed (e.g. a separate venv), not the library\'s')
  import importlib
  sys.path.insert(0, os.path.abspath(args.repo))
  repo_modules = lambda *names: [importlib.import_module(n) for n in names]  # noqa: E731
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  run = {'threads': args.threads, 'torch': torch.__version__, 'warmup': args.warmup}
  if args.row == 'passes':
    fns = pass_fns(torch, repo_modules)
    result = {}
    for name in PASSES:
      times = timed(fns[name], args.steps, args.warmup)
      result[name] = {'ms': statistics.median(times) * 1e3, 'ms_all': [t * 1e3 for t in times]}
      print(f"official {name:15s} {result[name]['ms']:7.1f} ms")
    result.update(matmul_s=matmul_seconds(torch), calls=args.steps, **run)
  else:
    step = STEPS[args.row](torch, repo_modules)
    images = torch.rand(BATCH, CHANNELS, RESOLUTION, RESOLUTION) * 2 - 1
    labels = torch.eye(CLASSES)[torch.randint(0, CLASSES, (BATCH,))]
    times = timed(lambda: step(images, labels), args.steps, args.warmup)
    result = {'row': args.row, 'step_s': statistics.median(times), 'step_s_all': times,
              'matmul_s': matmul_seconds(torch), 'steps': args.steps, **run}
    result['step_matmul_units'] = result['step_s'] / result['matmul_s']
  result.update(peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                measured=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))
  if args.row != 'passes':
    print(f"official {args.row}: step {result['step_s'] * 1e3:.1f} ms = "
          f"{result['step_matmul_units']:.2f} matmul (matmul {result['matmul_s'] * 1e3:.1f} ms), "
          f"peak RSS {result['peak_rss_mb']:.0f} MB")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
