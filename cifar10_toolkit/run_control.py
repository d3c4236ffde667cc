"""Run control for the scripts: errors, exit codes, signals, stdout.

  run_main(main)              the toolkit's errors (errors.py) as one line,
                              exit codes; memory growth set before anything
                              runs; the end of start-up (startup.py)
  GracefulStop                Ctrl-C / SIGTERM / SIGHUP: finish, save, exit
  signals_raise()             the same signals as an exception (Stopped)
  record_stop_signals()       a signal during start-up is kept for the loop
  stop_votes / read_votes     stop and save requests, agreed by all workers
  ClosableConsole             stdout that a closed reader cannot stop
  fetch_data_set(data_dir, source, data_set)
                              the data set in place, a signal ending it
  check_finite(losses, ...)   a NaN loss stops the run, naming its step

Exit status: 0 done; 1 a data, checkpoint or usage problem, a NaN loss, a file
system error; 2 a flag error; 128 + the signal's number when stopped by a
signal (after saving).
"""

import contextlib
import os
import re
import signal
import sys
import threading
import time

import numpy as np
import tensorflow as tf

from cifar10_toolkit import console
from cifar10_toolkit import dataset
from cifar10_toolkit import errors
from cifar10_toolkit import hardware
from cifar10_toolkit import startup


def run_main(main, argv=None, ends_startup=True):
  """Runs main(argv); expected failures become one line on stderr.

  Expected: the toolkit's own errors (DataSetError, errors.UsageError,
  errors.NanLossError), the file system's (OSError) and TensorFlow's (OpError: a
  file it cannot read or write). Anything else is a bug and keeps its
  traceback.

  ends_startup: end the capture of TensorFlow's start-up lines
  (startup.end_startup) before main runs; a training script ends it itself,
  once it has set TensorFlow's thread pools, which a warm-up would fix.

  Exit status: 0 done, 1 a data, checkpoint or usage problem, a NaN loss or
  a file system error (full disk, read-only folder: one line naming the file),
  2 a flag error found after parsing (errors.FlagError),
  130 / 143 / 129 stopped by Ctrl-C / SIGTERM / SIGHUP (after saving).
  """
  prog = startup.prog()
  hardware.set_memory_growth()  # before anything runs on a GPU
  if ends_startup:
    startup.end_startup(warm_up)
  for name in ('stdout', 'stderr'):  # a dead console never stops a run
    if not isinstance(getattr(sys, name), ClosableConsole):
      setattr(sys, name, ClosableConsole(getattr(sys, name)))
  if startup.interrupted():  # Ctrl-C while TensorFlow loaded, which swallows it
    return _fail('%s: interrupted' % prog, 130)
  try:
    return main(argv)
  except errors.FlagError as e:
    return _fail('%s: error: %s' % (prog, e), 2)
  except (errors.DataSetError, errors.UsageError, errors.NanLossError,
          OSError) as e:  # the toolkit's own, and the file system's
    return _fail('%s: error: %s' % (prog, e), 1)
  except tf.errors.OpError as e:
    return _fail('%s: error: %s' % (prog, first_line(e)), 1)
  except KeyboardInterrupt:
    return _fail('%s: interrupted' % prog, 130)
  except Stopped as e:
    return _fail('%s: %s; nothing was left half-written' % (prog, e),
                 128 + e.signum)
  finally:
    startup.end_startup()  # (a bug's traceback comes after: to the terminal)


def _fail(line, status):
  startup.end_startup()  # an error before start-up ended: to the terminal
  startup.say(line)
  return status


def warm_up():
  """Makes TensorFlow say its once-only start-up lines now, while they are
  captured (startup.end_startup): oneDNN's notice about small integer
  types comes with the first graph that holds one."""
  tf.function(lambda x: tf.transpose(x), autograph=False)(
      tf.zeros([1, 2], tf.int32))


class ClosableConsole:
  """A console stream that cannot stop a run: once it cannot be written
  (the reader of `... | head` gone, a terminal hung up: EPIPE or EIO; a
  full disk under a log file: ENOSPC; a closed or never opened fd, `>&-`)
  the lines go nowhere and the run goes on, saving as usual."""

  def __init__(self, stream):
    self._stream = stream if stream is not None else open(os.devnull, 'w')

  def _guard(self, method, *args):
    try:
      return getattr(self._stream, method)(*args)
    except (OSError, ValueError):  # a dead or closed stream
      devnull = open(os.devnull, 'w')
      try:  # what the old stream still buffers goes there too at exit
        os.dup2(devnull.fileno(), self._stream.fileno())
      except (OSError, ValueError):
        pass
      self._stream = devnull
      return None

  def write(self, text):
    self._guard('write', text)
    return len(text)

  def flush(self):
    self._guard('flush')

  def __getattr__(self, name):
    return getattr(self._stream, name)


def fetch_data_set(data_dir, source, data_set):
  """dataset.maybe_download_and_extract, a stop signal ending it at once:
  nothing half-downloaded or half-extracted is left (the status is the
  signal's)."""
  with signals_raise():
    return dataset.maybe_download_and_extract(data_dir, source, data_set)


def first_line(e):
  """The first line of an error's message, without TensorFlow's op prefix
  ('{{function_node ...}} ') and suffix (' [Op:SaveV2]')."""
  text = getattr(e, 'message', None) or str(e)
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', text).strip()
  text = re.sub(r'\s*\[Op:\w+\]$', '', text.splitlines()[0] if text else '')
  return text or type(e).__name__


# The signals after which training saves before it exits: Ctrl-C, kill's
# default, and a hang-up (the terminal or SSH session that ran it went away).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


_pending = []  # stop signals received before GracefulStop took over


def _heeded():
  """The stop signals this process heeds: those not ignored when it
  started (`nohup` ignores SIGHUP, a shell's background job SIGINT)."""
  return [s for s in STOP_SIGNALS if s not in startup.ignored_at_start()]


def record_stop_signals():
  """Until GracefulStop takes over, a stop signal is only recorded, so that
  one arriving while training starts (a cluster forming, the data loading)
  stops the run at the first chance instead of being lost. (TensorFlow's
  cluster set-up installs handlers of its own: a signal ignored at start is
  ignored again.)"""
  for s in STOP_SIGNALS:
    signal.signal(s, signal.SIG_IGN if s not in _heeded() else
                  lambda signum, frame: _pending.append(signum))


class Stopped(Exception):
  """A stop signal arrived where nothing is to be saved (signals_raise)."""

  def __init__(self, signum):
    super().__init__('stopped by %s' % signal.Signals(signum).name)
    self.signum = signum


@contextlib.contextmanager
def signals_raise():
  """While active, STOP_SIGNALS raise Stopped, so that `finally` clauses
  clean up (a half-written export is removed) before the exit, whose status
  run_main makes 128 + the signal's number."""
  def handle(signum, frame):
    raise Stopped(signum)
  old = {s: signal.signal(s, handle) for s in _heeded()}
  try:
    yield
  finally:
    for s, h in old.items():
      signal.signal(s, h)


class GracefulStop:
  """While active, STOP_SIGNALS only set `signum`; the loop then saves.

  Use as a context manager around a training loop and test `stop.requested`
  after each step. A second signal interrupts at once.

  The line saying a signal was caught comes at once, even while the main
  thread waits in a call into the graph, where Python's handler cannot run
  until the call returns: the signal's number is written to a pipe by the
  C-level handler (signal.set_wakeup_fd), and a thread that waits on it
  prints the line. Where that cannot be set up (not the main thread), the
  handler prints it; with defer, the training loop then takes it
  (take_caught) and prints it among the step lines of the call that was
  running, by time; say_caught prints one still pending.
  """

  def __init__(self, action='saving a checkpoint before exiting',
               defer=False):
    self.signum = None
    self.action = action
    self._defer, self._line = defer, None
    self._old = {}
    self._lock = threading.Lock()
    self._said = False  # the line of the first signal is printed
    self._wake = None  # (read end, write end, the wakeup fd before)

  @property
  def requested(self):
    return self.signum is not None

  def _handle(self, signum, frame):
    if self.signum is not None:  # second signal: give up on saving
      raise KeyboardInterrupt
    self.signum = signum
    caught = time.time()
    with self._lock:
      if not self._said:
        self._said = True
        self._line = (caught, self._caught_line(signum, caught))
    if not self._defer:
      self.say_caught()

  def _caught_line(self, signum, when):
    return '%s: caught %s; %s' % (console.now(when),
                                  signal.Signals(signum).name, self.action)

  def _acknowledge(self, read_end):
    """The thread that says the first stop signal at once (see above)."""
    with os.fdopen(read_end, 'rb', buffering=0) as pipe:
      while True:
        try:
          data = pipe.read(64)
        except OSError:
          return
        if not data:  # the write end closed: the loop is over
          return
        signums = [n for n in data if n in STOP_SIGNALS]
        with self._lock:
          if signums and not self._said:
            self._said = True
            try:
              print(self._caught_line(signums[0], time.time()), flush=True)
            except (OSError, ValueError):  # a console gone away
              pass

  def take_caught(self):
    """(time, line) of a signal caught and not yet said, or None; for the
    training loop to print among its step lines, in time order."""
    line, self._line = self._line, None
    return line

  def say_caught(self):
    """Prints the line of a signal caught, once."""
    line = self.take_caught()
    if line:
      print(line[1], flush=True)

  def __enter__(self):
    for s in _heeded():
      self._old[s] = signal.signal(s, self._handle)
    self._start_acknowledging()
    if _pending:  # one that came while the run started
      self._handle(_pending.pop(), None)
    return self

  def _start_acknowledging(self):
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
      before = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:  # not the main thread: the handler says it
      os.close(read_end)
      os.close(write_end)
      return
    self._wake = (write_end, before)
    threading.Thread(target=self._acknowledge, args=(read_end,),
                     name='stop-signal-line', daemon=True).start()

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)
    if self._wake:
      write_end, before = self._wake
      signal.set_wakeup_fd(before)
      os.close(write_end)  # the thread reads the end, and ends
      self._wake = None
    return False

  def sleep(self, seconds):
    """Sleeps up to seconds, waking early when a stop is requested."""
    end = time.monotonic() + seconds
    while not self.requested and time.monotonic() < end:
      time.sleep(min(0.1, max(end - time.monotonic(), 0)))

  @property
  def exit_status(self):
    return 128 + self.signum if self.signum else 0


def stop_votes(signum, save):
  """This worker's float32 votes for the training functions: one per stop
  signal (STOP_SIGNALS), then one to save now.

  (float32: MirroredStrategy cannot all-reduce an int32 tensor.)"""
  return tf.constant([float(signum == s) for s in STOP_SIGNALS] +
                     [float(save)], tf.float32)


def read_votes(votes):
  """(signal number or 0, save wanted) from the votes of all workers, summed."""
  votes = votes.numpy()
  signum = next((int(s) for s, n in zip(STOP_SIGNALS, votes) if n), 0)
  return signum, bool(votes[-1])


def check_finite(losses, first_step, train_dir):
  """Raises NanLossError naming the first step whose loss is not finite."""
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    raise errors.NanLossError(
        'loss is %s at step %d; stopped without saving, the last good '
        'checkpoint is %s' % (losses[bad[0]], first_step + bad[0] + 1,
                              tf.train.latest_checkpoint(train_dir)))
