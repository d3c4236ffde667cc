"""What every script of the toolkit shares.

  ArgumentParser, positive_int, ...   flags whose bad values get a one-line error
  run_main(main)                      one-line errors and exit codes for scripts
  checkpoint_manager(...)             the one checkpoint convention of both models
  GracefulStop                        Ctrl-C / SIGTERM: finish the step, save, exit
  write_scalars, write_histograms     the one summary convention
  NanLossError                        a NaN loss stops a run

Checkpoints: tf.train.Checkpoint(model=..., state=...) saved by a
tf.train.CheckpointManager as <dir>/ckpt-<global step>; TensorFlow writes the
data files first and then replaces the 'checkpoint' index file atomically, so
a reader (or a crash) never sees a half-written checkpoint.
"""

import argparse
import datetime
import os
import signal
import sys
import time

import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from cifar10_input import DATA_SOURCE_ENV, DataSetError

CHECKPOINT_PREFIX = 'ckpt'
MAX_CHECKPOINTS_TO_KEEP = 5
HISTOGRAM_BUCKETS = 30  # as tf.summary.histogram


class UsageError(Exception):
  """A flag value or a request that cannot be carried out."""


class NanLossError(Exception):
  """The loss became NaN or infinite."""


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


positive_int = _typed(int, lambda v: v > 0, 'a positive integer')
non_negative_int = _typed(int, lambda v: v >= 0, 'a non-negative integer')
positive_float = _typed(float, lambda v: v > 0 and v < float('inf'),
                        'a positive number')
non_negative_float = _typed(float, lambda v: 0 <= v < float('inf'),
                            'a non-negative number')


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


def run_main(main, argv=None):
  """Runs main(argv); expected failures become one line on stderr.

  Exit status: 0 done, 1 a data, checkpoint or usage problem or a NaN loss,
  130 / 143 stopped by Ctrl-C / SIGTERM (after saving).
  """
  prog = os.path.basename(sys.argv[0])
  try:
    return main(argv)
  except (DataSetError, UsageError, NanLossError, ValueError) as e:
    sys.stderr.write('%s: error: %s\n' % (prog, e))
    return 1
  except KeyboardInterrupt:
    sys.stderr.write('%s: interrupted\n' % prog)
    return 130


def now():
  """The tutorial's console timestamp."""
  return datetime.datetime.now()


def checkpoint_manager(directory, max_to_keep=MAX_CHECKPOINTS_TO_KEEP,
                       **objects):
  """The checkpoint convention of both models.

  Args:
    directory: folder of the checkpoints (created on first save).
    max_to_keep: how many recent checkpoints to keep.
    **objects: what to save, e.g. model=..., state=....

  Returns:
    (tf.train.Checkpoint, tf.train.CheckpointManager).
  """
  ckpt = tf.train.Checkpoint(**objects)
  manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep,
                                       checkpoint_name=CHECKPOINT_PREFIX)
  return ckpt, manager


def restore(ckpt, path, what='checkpoint'):
  """Restores path into ckpt; a checkpoint that does not fit is a UsageError."""
  try:
    ckpt.restore(path).expect_partial().assert_existing_objects_matched()
  except (ValueError, AssertionError, tf.errors.OpError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e)
    raise UsageError('%s %s does not fit this model (%s)' % (what, path, first))


class GracefulStop:
  """While active, Ctrl-C and SIGTERM only set `signum`; the loop then saves.

  Use as a context manager around a training loop and test `stop.requested`
  after each step. A second signal interrupts at once.
  """

  def __init__(self, action='saving a checkpoint before exiting'):
    self.signum = None
    self.action = action
    self._old = {}

  @property
  def requested(self):
    return self.signum is not None

  def _handle(self, signum, frame):
    if self.signum is not None:  # second signal: give up on saving
      raise KeyboardInterrupt
    self.signum = signum
    print('%s: caught %s; %s' % (now(), signal.Signals(signum).name,
                                 self.action), flush=True)

  def __enter__(self):
    for s in (signal.SIGINT, signal.SIGTERM):
      self._old[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)
    return False

  def sleep(self, seconds):
    """Sleeps up to seconds, waking early when a stop is requested."""
    end = time.time() + seconds
    while not self.requested and time.time() < end:
      time.sleep(min(0.1, max(end - time.time(), 0)))

  @property
  def exit_status(self):
    return 128 + self.signum if self.signum else 0


def write_scalars(values, step):
  """Writes name -> scalar to the default summary writer."""
  for name, value in values.items():
    tf.summary.scalar(name, value, step=step)


def histogram_buckets(values, buckets=HISTOGRAM_BUCKETS):
  """The [buckets, 3] (left edge, right edge, count) of tf.summary.histogram.

  The same buckets (equal widths from min to max, the maximum in the last),
  counted with tf.histogram_fixed_width: tf.summary.histogram builds a float64
  one-hot of size values x buckets (1.1 GB for conv1's activations of a
  batch), which made summary steps take a second and most of the memory.
  """
  x = tf.reshape(tf.cast(values, tf.float32), [-1])
  lo, hi = tf.reduce_min(x), tf.reduce_max(x)
  lo64, hi64 = tf.cast(lo, tf.float64), tf.cast(hi, tf.float64)
  if hi > lo:
    counts = tf.histogram_fixed_width(x, tf.stack([lo, hi]), nbins=buckets)
    edges = tf.concat([tf.linspace(lo64, hi64, buckets + 1)[:-1], [hi64]], 0)
    left, right = edges[:-1], edges[1:]
  else:  # a single value: everything in the last bucket, as TensorBoard does
    counts = tf.one_hot(buckets - 1, buckets, on_value=tf.size(x),
                        dtype=tf.int32)
    left = right = tf.fill([buckets], hi64)
  return tf.stack([left, right, tf.cast(counts, tf.float64)], axis=1)


def write_histograms(values, step, suffix=''):
  """Writes name -> tensor histograms to the default summary writer."""
  for name, value in values.items():
    tag = name + suffix
    tf.summary.write(
        tag, histogram_buckets(value), step=step,
        metadata=histogram_metadata.create_summary_metadata(tag, ''))


def write_graph(fn, args, step=0):
  """Traces one call of the tf.function fn(*args) and writes its graph.

  Returns fn's result.
  """
  tf.summary.trace_on(graph=True, profiler=False)
  result = fn(*args)
  tf.summary.trace_export(name='graph', step=step)
  return result
