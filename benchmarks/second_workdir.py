"""Resumes of a run whose first process found its programs in JAX's persistent cache (issue 6).

  python benchmarks/second_workdir.py [--config=configs/teacher_digits.py] [--steps=20]
      [--repeats=3] [--out benchmarks/results/second_workdir.json]

With a fresh persistent cache ($ONESTEP_JAX_CACHE_DIR), `experiments/main.py` trains the config
for `--steps` steps in workdir `first` (it compiles, and fills that cache), then in workdir
`second` (the same programs: the cache supplies them, as it does for anyone who runs a config
again in a new workdir). Then `--repeats` fresh processes each resume `second` for 10 more
steps. Reported per resume: the process's wall time, the runner's `train_time_s` (the training
loop: loading or tracing the phases, the first run, 10 steps) and the compiled programs that
`second/executables` holds (the phases, and the evaluation's samplers in `samplers/`), which a
resume loads instead of tracing and lowering them.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import step_timing  # noqa: E402


def train(config: str, workdir: str, num_steps: int, env: dict) -> dict:
  """Runs experiments/main.py to `num_steps` in `workdir`; its wall time and metrics.json."""
  start = time.perf_counter()
  done = subprocess.run([sys.executable, str(ROOT / 'experiments' / 'main.py'),
                         f'--config={config}', f'--workdir={workdir}',
                         f'--config.train.num_steps={num_steps}', '--config.train.save_every=10',
                         '--config.eval.every_steps=0'],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  wall = time.perf_counter() - start
  if done.returncode:
    sys.exit(f'experiments/main.py failed in {workdir}:\n{done.stderr[-2000:]}')
  with open(os.path.join(workdir, 'metrics.json')) as f:
    return {'wall_s': wall, 'train_time_s': json.load(f)['train_time_s']}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=str(ROOT / 'configs' / 'teacher_digits.py'))
  parser.add_argument('--steps', type=int, default=20, help='steps of the first runs')
  parser.add_argument('--repeats', type=int, default=3, help='resumes, each a fresh process')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                           'second_workdir.json'))
  args = parser.parse_args()
  if args.steps < 10 or args.steps % 10:
    parser.error('--steps must be a positive multiple of 10 (checkpoints every 10 steps)')
  started = step_timing.machine()
  with tempfile.TemporaryDirectory() as tmp:
    env = {**os.environ, 'ONESTEP_JAX_CACHE_DIR': os.path.join(tmp, 'xla'),
           'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    first = train(args.config, os.path.join(tmp, 'first'), args.steps, env)
    second_dir = os.path.join(tmp, 'second')
    second = train(args.config, second_dir, args.steps, env)
    kept = sorted(os.path.relpath(os.path.join(d, f), second_dir)
                  for d, _, files in os.walk(os.path.join(second_dir, 'executables'))
                  for f in files if f.endswith('.bin'))
    resumes = [train(args.config, second_dir, args.steps + 10 * (i + 1), env)
               for i in range(args.repeats)]
  med = lambda k: statistics.median(r[k] for r in resumes)
  result = {'_measured': {**started, 'load_avg_at_end': list(os.getloadavg())},
            'config': os.path.relpath(args.config, ROOT), 'first_run': first, 'second_run': second,
            'second_workdir_executables': kept, 'resumes': resumes,
            'resume_wall_s': med('wall_s'), 'resume_train_time_s': med('train_time_s')}
  print(f'first run {first["wall_s"]:.1f} s, second workdir {second["wall_s"]:.1f} s '
        f'({len(kept)} compiled programs kept); resumes (10 steps each): wall '
        + ', '.join(f'{r["wall_s"]:.2f}' for r in resumes) + ' s, train_time_s '
        + ', '.join(f'{r["train_time_s"]:.2f}' for r in resumes) + ' s', flush=True)
  step_timing.write_json(args.out, result)


if __name__ == '__main__':
  main()
