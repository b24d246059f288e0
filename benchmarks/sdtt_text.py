"""SDTT on the pydoc character corpus: generative perplexity and unigram entropy against the
number of sampling steps, for the MDLM teacher and the last SDTT student, beside the
autoregressive baseline that scores them.

  python benchmarks/sdtt_text.py [--workroot=runs/sdtt_text_bench] [--batch_size=16] \
      [--teacher_steps=1000] [--round_steps=125] [--num_samples=128]

Trains configs/ar_text.py and configs/mdlm_text.py side by side (two processes), then distils
that teacher with configs/sdtt_text.py:<teacher run> (rounds 128 -> 8 steps) scored by the AR
run (--config.eval.ar_evaluator), each in a fresh process (reruns resume), at the sizes given:
the configs' own sizes (batch 64, 5,000 teacher steps) take hours on a CPU. The EMA half-lives
are scaled by the number of training sequences relative to the configs' own, so that the
evaluated EMA weights average the same share of the run. Writes benchmarks/results/sdtt_text.json
(commands, wall and CPU times, metrics).
"""
import argparse
import concurrent.futures
import json
import os
import time

from distill import ROOT, RESULTS, run_method

STEPS = (128, 64, 32, 16, 8)
# (EMA half-life in sequences, sequences trained) of the configs' own sizes
TEACHER_EMA, TEACHER_SEQUENCES = 50_000, 64 * 5000  # mdlm_text.py, ar_text.py
STUDENT_EMA, STUDENT_SEQUENCES = 10_000, 64 * 4 * 1000  # sdtt_text.py


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workroot', default=str(ROOT / 'runs' / 'sdtt_text_bench'))
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--teacher_steps', type=int, default=1000, help='also the AR model\'s')
  parser.add_argument('--round_steps', type=int, default=125, help='per SDTT round (4 rounds)')
  parser.add_argument('--num_samples', type=int, default=128, help='per model and step count')
  args = parser.parse_args()
  ar_dir, teacher_dir, sdtt_dir = (os.path.join(args.workroot, n)
                                   for n in ('ar_text', 'mdlm_text', 'sdtt_text'))
  b = args.batch_size
  teacher_ema = TEACHER_EMA * b * args.teacher_steps / TEACHER_SEQUENCES
  student_ema = STUDENT_EMA * b * 4 * args.round_steps / STUDENT_SEQUENCES
  evaluation = [f'--config.eval.num_samples={args.num_samples}']
  teacher_size = [*evaluation, f'--config.train.batch_size={b}',
                  f'--config.train.num_steps={args.teacher_steps}',
                  f'--config.method.ema_halflife_nimg={teacher_ema:g}']
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    ar = pool.submit(run_method, 'ar_text', '', '', ar_dir,
                     [*teacher_size, f'--config.eval.ar_evaluator={ar_dir}'])  # its own samples
    teacher = pool.submit(run_method, 'mdlm_text', '', '', teacher_dir,
                          [*teacher_size, "--config.method.sample_steps=(128,)"])
    runs = {'ar': ar.result(), 'teacher': teacher.result()}
  runs['sdtt'] = run_method('sdtt_text', teacher_dir, '', sdtt_dir, [
      *evaluation, f'--config.train.batch_size={b}',
      f'--config.method.round_steps={args.round_steps}',
      f'--config.train.num_steps={4 * args.round_steps}',
      f'--config.method.ema_halflife_nimg={student_ema:g}',
      f'--config.eval.ar_evaluator={ar_dir}'])
  ar, m = runs['ar']['metrics'], runs['sdtt']['metrics']
  print(f'{"steps":>6s} {"teacher gen_ppl":>16s} {"entropy":>8s} {"student gen_ppl":>16s} '
        f'{"entropy":>8s}')
  for n in STEPS:
    print(f'{n:6d} {m[f"teacher/gen_ppl@{n}"]:16.3f} {m[f"teacher/entropy@{n}"]:8.3f} '
          f'{m[f"student/gen_ppl@{n}"]:16.3f} {m[f"student/entropy@{n}"]:8.3f}')
  print(f'{"AR":>6s} {ar["ar/gen_ppl@128"]:16.3f} {ar["ar/entropy@128"]:8.3f}   (its own samples; '
        f'held-out text: gen_ppl {m["data/gen_ppl_floor"]:.3f}, '
        f'data entropy {m["data/entropy_floor"]:.3f}; nelbo AR {ar["ar/nelbo"]:.3f}, teacher '
        f'{m["teacher/nelbo"]:.3f}, student {m["student/nelbo"]:.3f}')
  RESULTS.mkdir(parents=True, exist_ok=True)
  with open(RESULTS / 'sdtt_text.json', 'w') as f:
    json.dump({'date': time.strftime('%Y-%m-%d'), 'cpu_count': os.cpu_count(),
               'args': vars(args), 'runs': runs}, f, indent=2, sort_keys=True)
  print(f'wrote {RESULTS / "sdtt_text.json"}')


if __name__ == '__main__':
  main()
