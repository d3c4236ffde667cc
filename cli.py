"""Command-line plumbing that needs no TensorFlow (so it works before TF loads).

  ArgumentParser, positive_int, ...   flags whose bad values get a one-line error
  bounded_int(lo, hi, what)           an integer flag with a range
  add_bool, add_data_flags            the flag conventions of every script
  quiet_interrupt()                   Ctrl-C while a script starts: one line, 130

Every script imports this first, so that a Ctrl-C during the seconds that
importing TensorFlow takes ends with `<script>: interrupted` and exit status
130 rather than a traceback.
"""

import argparse
import os
import signal
import sys

DATA_SOURCE_ENV = 'CIFAR10_DATA_SOURCE'
MAX_SEED = 2**31 - 1


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are one line: 'prog: error: ...', exit status 2."""

  def error(self, message):
    self.exit(2, '%s: error: %s\n' % (self.prog, message))


def _typed(cast, ok, what):
  def parse(text):
    try:
      value = cast(text)
    except ValueError:
      raise argparse.ArgumentTypeError('%r is not %s' % (text, what))
    if not ok(value):
      raise argparse.ArgumentTypeError('must be %s, got %s' % (what, text))
    return value
  return parse


def bounded_int(lo, hi, what=None):
  """An integer flag type accepting lo..hi (inclusive)."""
  return _typed(int, lambda v: lo <= v <= hi,
                what or 'an integer from %d to %d' % (lo, hi))


positive_int = _typed(int, lambda v: v > 0, 'a positive integer')
non_negative_int = _typed(int, lambda v: v >= 0, 'a non-negative integer')
positive_float = _typed(float, lambda v: v > 0 and v < float('inf'),
                        'a positive number')
non_negative_float = _typed(float, lambda v: 0 <= v < float('inf'),
                            'a non-negative number')
seed_int = bounded_int(0, MAX_SEED)


def step_range(text):
  """'A,B' -> (A, B), 0 <= A < B: the steps of a profile."""
  try:
    a, b = (int(x) for x in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError('%r is not two steps A,B' % text)
  if not 0 <= a < b:
    raise argparse.ArgumentTypeError('must be A,B with 0 <= A < B, got %s'
                                     % text)
  return a, b


def add_profile_flag(parser):
  """--profile_steps A,B: a TensorFlow profiler trace of steps A+1 to B."""
  parser.add_argument('--profile_steps', type=step_range, default=None,
                      metavar='A,B',
                      help='record a profiler trace of the steps after step A '
                      'up to step B into train_dir, for TensorBoard\'s '
                      'Profile tab (needs tensorboard-plugin-profile to view; '
                      'default: none)')


def str2bool(text):
  """Parses True/False flags the way the tutorial's tf.app.flags did."""
  if text.lower() in ('1', 'true', 'yes', 't', 'y'):
    return True
  if text.lower() in ('0', 'false', 'no', 'f', 'n'):
    return False
  raise argparse.ArgumentTypeError('%r is not a boolean' % text)


def add_bool(parser, name, default, help_text, default_text=None):
  """A boolean flag: --name, --name=False, --noname."""
  parser.add_argument('--' + name, nargs='?', const=True, default=default,
                      type=str2bool, help=help_text + ' (default %s)' % (
                          default_text or default))
  parser.add_argument('--no' + name, dest=name, action='store_false',
                      help=argparse.SUPPRESS)


def add_data_flags(parser, what='where the data set is, or is fetched to'):
  """--data_dir and --data_source, the same in every script."""
  parser.add_argument('--data_dir', default='/tmp/cifar10_data',
                      help=what + ' (default %(default)s)')
  parser.add_argument('--data_source', default=None,
                      help='URL or local path of cifar-10-binary.tar.gz to '
                      'fetch when data_dir has no data set (default $%s, else '
                      'the official URL)' % DATA_SOURCE_ENV)


def prog():
  return os.path.basename(sys.argv[0])


_interrupted = []


def interrupted():
  """Whether Ctrl-C was pressed while the script started (importing
  TensorFlow swallows the KeyboardInterrupt, so it is also recorded here)."""
  return bool(_interrupted)


def _on_sigint(signum, frame):
  _interrupted.append(signum)
  raise KeyboardInterrupt


def quiet_interrupt():
  """A Ctrl-C during start-up ends the script with one line, status 130.

  The SIGINT handler records it (see interrupted(), which run_main checks
  once the imports are done) and raises KeyboardInterrupt; one that escapes
  everything prints one line instead of a traceback.
  """
  signal.signal(signal.SIGINT, _on_sigint)
  previous = sys.excepthook

  def hook(kind, value, tb):
    if issubclass(kind, KeyboardInterrupt):
      sys.stderr.write('%s: interrupted\n' % prog())
      sys.stderr.flush()
      os._exit(130)
    previous(kind, value, tb)
  sys.excepthook = hook


quiet_interrupt()
