"""Command-line plumbing that needs no TensorFlow (so it works before TF loads).

  ArgumentParser, positive_int, ...   flags whose bad values get a one-line error
  bounded_int(lo, hi, what)           an integer flag with a range
  add_bool, add_data_flags            the flag conventions of every script
  quiet_interrupt()                   Ctrl-C while a script starts: one line, 130

Every script imports this first and, run as a script, calls
quiet_interrupt(), so that a Ctrl-C during the seconds that importing
TensorFlow takes ends with `<script>: interrupted` and exit status 130
rather than a traceback. Importing a module changes nothing.
"""

import argparse
import atexit
import os
import re
import signal
import sys
import threading

DATA_SOURCE_ENV = 'CIFAR10_DATA_SOURCE'
MAX_SEED = 2**31 - 1


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are one line: 'prog: error: ...', exit status 2,
  and whose boolean flags (add_bool) never take the next argument."""

  def error(self, message):
    self.exit(2, '%s: error: %s\n' % (self.prog, message))

  def parse_known_args(self, args=None, namespace=None):
    names = getattr(self, 'bool_flags', ())
    rewritten = []
    for arg in sys.argv[1:] if args is None else args:
      name, eq, value = arg.partition('=')
      if (eq and name.startswith('--') and value.lower() == 'auto' and
          name[2:] in getattr(self, 'auto_flags', ())):
        arg = '--auto_' + name[2:]  # --flag=auto: back to the default, None
      elif eq and name.startswith('--') and name[2:] in names:
        try:  # --flag=false is --noflag
          arg = name if str2bool(value) else '--no' + name[2:]
        except argparse.ArgumentTypeError as e:
          self.error('argument %s: %s' % (name, e))
      rewritten.append(arg)
    return super().parse_known_args(rewritten, namespace)


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


def auto_or_positive_int(text):
  """'auto', or a positive integer."""
  return text if text == 'auto' else _typed(
      int, lambda v: 0 < v <= 1024,
      "'auto' or an integer from 1 to 1024")(text)


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
  """A boolean flag: --name, --name=false, --noname; it takes no separate
  value, so `--resize big.png` leaves big.png to the files (a cli
  ArgumentParser rewrites --name=VALUE). A default of None makes it
  three-way: unset (or --name=auto) leaves the choice to the hardware."""
  parser.bool_flags = getattr(parser, 'bool_flags', set()) | {name}
  parser.add_argument('--' + name, action='store_const', const=True,
                      default=default, help=help_text + ' (default %s)' % (
                          default_text or default))
  parser.add_argument('--no' + name, dest=name, action='store_false',
                      help=argparse.SUPPRESS)
  if default is None:
    parser.auto_flags = getattr(parser, 'auto_flags', set()) | {name}
    parser.add_argument('--auto_' + name, dest=name, action='store_const',
                        const=None, help=argparse.SUPPRESS)


def add_data_flags(parser, what='where the data set is, or is fetched to'):
  """--data_dir and --data_source, the same in every script."""
  parser.add_argument('--data_dir', default='/tmp/cifar10_data',
                      help=what + ' (default %(default)s)')
  parser.add_argument('--data_source', default=None,
                      help='URL or local path of cifar-10-binary.tar.gz to '
                      'fetch when data_dir has no data set (default $%s, else '
                      'the official URL)' % DATA_SOURCE_ENV)


# Loop shape, chosen by measurement on a CPU and by reasoning for a GPU
# (README, "Performance"): see benchmarks/benchmark.py.
DEFAULT_STEPS_PER_LOOP = 100
MIN_SHARD_EXAMPLES = 32  # --shards auto: the smallest slice
FIRST_PROGRESS_SECS = 20  # the first 'how long to go' line, after the start
# The scalars the HParams dashboard shows beside each run's flags: (tag, sub-
# folder of the run, name). The training run brings its loss and the
# evaluator, wherever its --eval_dir, the precision of that run's checkpoints:
# both write the same trial id (summaries.write_hparams), which makes them one
# row.
HPARAMS_METRICS = [('total_loss', '', 'training loss (averaged)'),
                   ('Precision @ 1', '', 'precision @ 1 (eval)')]


def convnet_train_parser(description):
  """The tutorial's training flags and defaults, plus the toolkit's own."""
  p = ArgumentParser(
      description=description.split('\n')[0],
      formatter_class=lambda prog: argparse.HelpFormatter(
          prog, max_help_position=34))
  p.add_argument('--train_dir', default='/tmp/cifar10_train',
                 help='where checkpoints and event logs are written and '
                 'resumed from (default %(default)s)')
  p.add_argument('--max_steps', type=positive_int, default=1000000,
                 help='global step at which training stops (default '
                 '%(default)s)')
  p.add_argument('--log_frequency', type=positive_int, default=10,
                 help='print a progress line every this many steps (default '
                 '%(default)s)')
  p.add_argument('--batch_size', type=positive_int, default=128,
                 help='images per batch, per replica (default %(default)s)')
  add_data_flags(p)
  add_bool(p, 'use_fp16', False, 'mixed precision: float16 '
                     'compute, float32 variables, dynamic loss scaling')
  add_bool(
      p, 'use_bf16', None, 'mixed precision: bfloat16 compute, '
      'float32 variables', 'auto: on where the device computes '
      'bfloat16 natively (a CPU with AMX or AVX512-BF16, a GPU of compute '
      'capability 8.0 or more); a GPU without it takes float16 from '
      'compute capability 7.0')
  add_bool(p, 'log_device_placement', False,
                     'log where each operation runs')
  p.add_argument('--seed', type=seed_int, default=None,
                 help='seed of the initial weights, input order and '
                 'distortions (default: random; a resumed run keeps its own)')
  add_bool(p, 'fresh', False, 'start afresh: move the checkpoints '
                     'and logs in train_dir to train_dir/previous-<time>/ '
                     'instead of resuming')
  p.add_argument('--save_checkpoint_secs', type=positive_float,
                 default=180, help='seconds between checkpoints (default '
                 '%(default)s)')
  p.add_argument('--progress_secs', type=positive_float, default=300,
                 help='seconds between lines saying how far the run is and '
                 'how long it has to go; the first comes %d s after the '
                 'start (default %%(default)s)' % FIRST_PROGRESS_SECS)
  p.add_argument('--summary_steps', type=positive_int, default=100,
                 help='write summaries every this many steps (default '
                 '%(default)s)')
  add_bool(p, 'jit_compile', None,
           'compile each replica\'s training step, its input included, with '
           'XLA: --jit_compile, --nojit_compile or --jit_compile=auto',
           'auto: on a GPU, off on a CPU')
  p.add_argument('--steps_per_loop', type=bounded_int(1, 100000),
                 default=DEFAULT_STEPS_PER_LOOP,
                 help='training steps run by one call into the graph; the '
                 'host checks the loss, logs, saves and handles signals '
                 'between calls (default %(default)s)')
  add_profile_flag(p)
  p.add_argument('--data_on_device', default='auto',
                 choices=['auto', 'true', 'false'],
                 help="keep the training set on the compute device and make "
                 "each batch inside the training graph ('true'), or feed it "
                 "with tf.data ('false'); the batches are the same either "
                 "way. 'auto': true, on a GPU and on a CPU (default "
                 "%(default)s)")
  p.add_argument('--shards', type=auto_or_positive_int, default='auto',
                 help="compute each replica's batch as this many slices side "
                 "by side, each kernel on one core's share of the threads "
                 "(the same step: one gradient over the batch). 'auto': on a "
                 "CPU with one replica, as many as the cores, each slice at "
                 "least %d examples; else 1 (default %%(default)s)"
                 % MIN_SHARD_EXAMPLES)
  return p


def parse_early(build_parser):
  """Parses sys.argv with a script's parser before TensorFlow is imported, so
  that -h and flag errors answer at once (main() parses again: cheap), then
  filters TensorFlow's start-up noise from stderr (filter_startup_noise)."""
  build_parser().parse_args(sys.argv[1:])
  filter_startup_noise()


# Lines TensorFlow 2.21 writes to stderr at every start on a machine without
# a GPU (C++ logging, which TF_CPP_MIN_LOG_LEVEL no longer reaches before
# absl::InitializeLog), matched whole. Each says nothing wrong: no GPU found
# where none is, CPU features, a oneDNN fallback for uint8.
NOISE = [re.compile(p) for p in (
    r'WARNING: All log messages before absl::InitializeLog\(\) is called '
    r'are written to STDERR',
    r'I0000 [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\. .*',
    r'I0000 [\d:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on '
    r'your machine, GPU will not be used\.',
    r'I0000 [\d:. ]+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is '
    r'optimized to use available CPU instructions in performance-critical '
    r'operations\.',
    r'To enable the following instructions: [A-Z0-9_ ]+, in other operations, '
    r'rebuild TensorFlow with the appropriate compiler flags\.',
    r'E0000 [\d:. ]+\d+ util\.cc:\d+\] oneDNN supports DT_(UINT8|INT32) '
    r'only on platforms with AVX-512\. Falling back to the default '
    r'Eigen-based implementation if present\.',
)]
# Only where no NVIDIA driver is installed: then a failed cuInit is expected.
NO_DRIVER_NOISE = re.compile(
    r'E0000 [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*')
_stderr = []


def is_noise(line, driver=None):
  """Whether a stderr line is one of TensorFlow's benign start-up lines."""
  if driver is None:
    driver = os.path.exists('/proc/driver/nvidia/version')
  return (any(p.fullmatch(line) for p in NOISE) or
          (not driver and NO_DRIVER_NOISE.fullmatch(line) is not None))


def filter_startup_noise():
  """Routes file descriptor 2 through a thread that drops the NOISE lines.

  Everything else (Python's own stderr included) passes through unchanged and
  in order. TF_CPP_MIN_LOG_LEVEL=0 (asking for TensorFlow's info lines)
  turns the filter off. At exit, whatever is pending is written out.
  """
  if _stderr or os.environ.get('TF_CPP_MIN_LOG_LEVEL') == '0':
    return
  driver = os.path.exists('/proc/driver/nvidia/version')
  real = os.dup(2)
  read_end, write_end = os.pipe()
  sys.stderr.flush()
  os.dup2(write_end, 2)
  os.close(write_end)

  def pump():
    with os.fdopen(read_end, 'rb') as pipe:
      for raw in pipe:
        if not is_noise(raw.decode('utf-8', 'replace').rstrip('\n'), driver):
          os.write(real, raw)

  thread = threading.Thread(target=pump, daemon=True)
  thread.start()
  _stderr.extend([real, thread])
  atexit.register(restore_stderr)


def restore_stderr():
  """Stops the filter: fd 2 is the real stderr again, pending lines written."""
  if not _stderr:
    return
  real, thread = _stderr
  try:
    sys.stderr.flush()
  except (OSError, ValueError):
    pass
  os.dup2(real, 2)  # closes the pipe's last write end: the pump sees EOF
  thread.join(timeout=5)
  del _stderr[:]


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
      restore_stderr()
      sys.stderr.write('%s: interrupted\n' % prog())
      sys.stderr.flush()
      os._exit(130)
    previous(kind, value, tb)
  sys.excepthook = hook
