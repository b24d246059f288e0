"""Running processes in tests, bounded in time: several at once, or one killed mid-run."""
import os
import signal
import subprocess
import time


def run_concurrently(commands, *, env, timeout):
  """Starts every command, waits for all (killing any still running after `timeout` seconds)
  and fails with the tail of the output of any that failed."""
  procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for c in commands]
  try:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]


def kill_after_checkpoint(command, *, checkpoints, min_step, env, timeout):
  """Starts `command` and SIGKILLs it as soon as the directory `checkpoints` holds a step
  >= `min_step`; fails if the run ended or `timeout` seconds passed before that."""
  proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  seen = False
  try:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
      if checkpoints.exists() and any(p.name.isdigit() and int(p.name) >= min_step
                                      for p in checkpoints.iterdir()):
        seen = True
        break
      time.sleep(0.05)
    assert seen and proc.poll() is None, ('the run ended (or timed out) before a checkpoint of '
                                          f'step >= {min_step}; make it longer')
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()
