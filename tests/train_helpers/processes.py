"""Running several processes at once in tests, bounded in time."""
import subprocess


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
