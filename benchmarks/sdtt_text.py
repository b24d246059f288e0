"""SDTT on the pydoc character corpus: generative perplexity and unigram entropy against the
number of sampling steps, for the MDLM teacher and the last SDTT student, beside the
autoregressive baseline that scores them.

  python benchmarks/sdtt_text.py [--workroot=runs/sdtt_text_bench] [--batch_size=16] \
      [--teacher_steps=1000] [--round_steps=125]

Runs configs/ar_text.py, then configs/sdtt_text.py (its MDLM teacher first, then the rounds
128 -> 8 steps) with --config.eval.ar_evaluator=<the ar run>, each in a fresh process (reruns
resume), at the sizes given: the configs' own sizes (batch 64, 5,000 teacher steps) take hours
on a CPU. Writes benchmarks/results/sdtt_text.json (commands, wall and CPU times, metrics).
"""
import argparse
import json
import os
import time

from distill import ROOT, RESULTS, run_method

STEPS = (128, 64, 32, 16, 8)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workroot', default=str(ROOT / 'runs' / 'sdtt_text_bench'))
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--teacher_steps', type=int, default=1000, help='also the AR model\'s')
  parser.add_argument('--round_steps', type=int, default=125, help='per SDTT round (4 rounds)')
  args = parser.parse_args()
  ar_dir, sdtt_dir = (os.path.join(args.workroot, n) for n in ('ar_text', 'sdtt_text'))
  size = [f'--config.train.batch_size={args.batch_size}']
  runs = {
      'ar': run_method('ar_text', '', '', ar_dir,
                       [*size, f'--config.train.num_steps={args.teacher_steps}',
                        f'--config.eval.ar_evaluator={ar_dir}']),  # scores its own samples
      'sdtt': run_method('sdtt_text', '', '', sdtt_dir, [
          *size, f'--config.method.round_steps={args.round_steps}',
          f'--config.train.num_steps={4 * args.round_steps}',
          f'--config.teacher_run.train.batch_size={args.batch_size}',
          f'--config.teacher_run.train.num_steps={args.teacher_steps}',
          f'--config.eval.ar_evaluator={ar_dir}'])}
  ar, m = runs['ar']['metrics'], runs['sdtt']['metrics']
  print(f'{"steps":>6s} {"teacher gen_ppl":>16s} {"entropy":>8s} {"student gen_ppl":>16s} '
        f'{"entropy":>8s}')
  for n in STEPS:
    print(f'{n:6d} {m[f"teacher/gen_ppl@{n}"]:16.3f} {m[f"teacher/entropy@{n}"]:8.3f} '
          f'{m[f"student/gen_ppl@{n}"]:16.3f} {m[f"student/entropy@{n}"]:8.3f}')
  print(f'{"AR":>6s} {ar["ar/gen_ppl@128"]:16.3f} {ar["ar/entropy@128"]:8.3f}   (its own samples; '
        f'held-out text: gen_ppl {m["data/gen_ppl_floor"]:.3f}, '
        f'data entropy {m["data/entropy_floor"]:.3f}; nelbo teacher {m["teacher/nelbo"]:.3f}, '
        f'student {m["student/nelbo"]:.3f}')
  RESULTS.mkdir(parents=True, exist_ok=True)
  with open(RESULTS / 'sdtt_text.json', 'w') as f:
    json.dump({'date': time.strftime('%Y-%m-%d'), 'cpu_count': os.cpu_count(),
               'args': vars(args), 'runs': runs}, f, indent=2, sort_keys=True)
  print(f'wrote {RESULTS / "sdtt_text.json"}')


if __name__ == '__main__':
  main()
