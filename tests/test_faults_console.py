"""A console that cannot be written never stops a run nor loses a step: a
terminal that hangs up, a full disk under the log, closed stdout or stderr;
and a signal ignored when the run started (nohup) stays ignored."""

import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
import time

import pytest
import tensorflow as tf

from conftest import ROOT, train_args

pytestmark = pytest.mark.slow


def _args(data, d, steps):
  return [sys.executable, 'cifar10_train.py'] + train_args(data, d) + [
      '--max_steps', str(steps), '--steps_per_loop', '2']


def _step(d):
  latest = tf.train.latest_checkpoint(d)
  return int(latest.rsplit('-', 1)[1]) if latest else None


def test_a_terminal_that_hangs_up_saves_like_sighup(shared_bin_dir, tmp_path):
  d = str(tmp_path / 't')
  master, slave = pty.openpty()

  def controlling_terminal():  # the pty is the run's terminal, as in a shell
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
  proc = subprocess.Popen(_args(shared_bin_dir, d, 100000), cwd=ROOT,
                          stdin=slave, stdout=slave, stderr=slave,
                          preexec_fn=controlling_terminal,
                          env=dict(os.environ, PYTHONUNBUFFERED='1'))
  os.close(slave)
  seen, deadline = b'', time.time() + 120
  while b': step 6, loss' not in seen and time.time() < deadline:
    try:
      seen += os.read(master, 4096)
    except OSError:
      break
  assert b': step 6, loss' in seen, seen.decode(errors='replace')
  os.close(master)  # the terminal goes away: SIGHUP, then EIO on every write
  proc.wait(timeout=120)
  assert proc.returncode == 128 + signal.SIGHUP
  assert _step(d) >= 6


# stdout closed (EBADF; nothing said on stderr about it), then stdout on a
# full disk (ENOSPC, /dev/full) with stderr closed: two runs, as a shell
# starts them, for what were four (each stream copes on its own)
@pytest.mark.parametrize('redirect', ['>&-', '>/dev/full 2>&-'])
def test_closed_or_full_stdout_or_stderr_trains_silently(shared_bin_dir,
                                                         tmp_path, redirect):
  d = str(tmp_path / 't')
  command = ' '.join("'%s'" % a for a in _args(shared_bin_dir, d, 20))
  p = subprocess.run(['sh', '-c', 'exec %s %s' % (command, redirect)],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr
  assert _step(d) == 20
  if '2>&-' not in redirect:
    assert p.stderr == ''


def test_a_signal_ignored_at_start_stays_ignored(shared_bin_dir, tmp_path):
  # `nohup cifar10_train.py &`: SIGHUP ignored when the run starts
  d = str(tmp_path / 't')
  proc = subprocess.Popen(
      _args(shared_bin_dir, d, 60), cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True,
      preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
      env=dict(os.environ, PYTHONUNBUFFERED='1'))
  for line in proc.stdout:
    if ': step 6, loss' in line:
      break
  proc.send_signal(signal.SIGHUP)  # the logout
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0 and 'caught SIGHUP' not in out, out
  assert _step(d) == 60
