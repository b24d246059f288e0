"""Time and peak memory of one distillation iteration at the EDM reference setting.

  python benchmarks/distill_step.py [--methods=diff_instruct,sid,dmd2] [--repeats=3] [--steps=15]

One iteration = one fake-score update + one generator update (update ratio 1, no GAN head), with
generator, fake score and teacher the DESIGN reference network (EDM-preconditioned SongUNet,
DDPM++ settings, 32x32x3, 32 channels, channel_mult [1,2,2], one block per level, attention at
16, 10 classes, augment_dim 9; random weights), batch 16, float32. The official PyTorch code
takes about 1.06 s (SiD) and 0.82 s (DMD2) per iteration on 2 CPU cores. Each method runs in
`--repeats` fresh processes; the figures are medians over processes of the per-process median
step time, and the largest peak RSS. Writes benchmarks/results/distill_step.json.
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))


def one_process(method: str, steps: int) -> dict:
  """Benchmarks `method` in this process (called in a fresh child)."""
  import jax
  from onestep_jax.methods.networks import build_network, init_network
  from onestep_jax.experiment.defaults import one_step_method_fields
  from onestep_jax.train.export import export_params
  from train_step import benchmark, edm_reference_config

  with tempfile.TemporaryDirectory() as tmp:
    c = edm_reference_config(tmp)
    kwargs = c.net.kwargs.to_dict()
    params = init_network(build_network('song_unet', kwargs), jax.random.PRNGKey(0),
                          example_shape=(32, 32, 3), num_classes=10)
    export_params(os.path.join(tmp, 'teacher'), params, net_kwargs=kwargs,
                  metadata={'network': 'song_unet', 'objective': 'edm', 'sigma_data': 0.5,
                            'num_classes': 10})
    one_step_method_fields(c.method, method)
    c.method.teacher = os.path.join(tmp, 'teacher')
    c.method.init_from_teacher = True
    c.method.fake_score_warmup_steps = 0
    c.method.fake_score_steps = 1
    c.method.gan_weight_generator = c.method.gan_weight_discriminator = 0.0
    c.train.compilation_cache = False
    result = benchmark(c, steps)
  result['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--methods', default='diff_instruct,sid,dmd2')
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes per method')
  parser.add_argument('--steps', type=int, default=15, help='timed iterations per process')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'distill_step.json'))
  args = parser.parse_args()
  if args.child:
    print(json.dumps(one_process(args.child, args.steps)))
    return
  results = {}
  for method in args.methods.split(','):
    runs = []
    for _ in range(args.repeats):
      out = subprocess.run([sys.executable, __file__, f'--child={method}',
                            f'--steps={args.steps}'], check=True, capture_output=True, text=True)
      runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    results[method] = r = {
        'step_s_median': statistics.median(x['step_s_median'] for x in runs),
        'step_s_per_process': [x['step_s_median'] for x in runs],
        'compile_s_median': statistics.median(x['compile_s_estimate'] for x in runs),
        'init_s_median': statistics.median(x['init_s'] for x in runs),
        'peak_rss_mb_max': max(x['peak_rss_mb'] for x in runs),
        'schedule': runs[0]['schedule'], 'batch_size': runs[0]['batch_size']}
    print(f'{method:14s} iteration {r["step_s_median"]:.3f} s (per process '
          f'{", ".join(f"{s:.3f}" for s in r["step_s_per_process"])}), compile '
          f'~{r["compile_s_median"]:.1f} s, peak RSS {r["peak_rss_mb_max"]:.0f} MB', flush=True)
  results['_measured'] = {'date': time.strftime('%Y-%m-%d %H:%M'), 'cpu_count': os.cpu_count(),
                          'repeats': args.repeats, 'steps': args.steps}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
