"""A script's first seconds, before and while TensorFlow loads (no TensorFlow
imported here).

  quiet_interrupt()     Ctrl-C while a script starts: one line, status 130;
                        what signals were ignored at start (they stay so);
                        closed standard fds kept from reuse
  interrupted()         whether that happened (importing TensorFlow swallows
                        the KeyboardInterrupt)
  hide_startup_noise()  TensorFlow's benign start-up lines kept off stderr
  defer_keras()         TensorFlow loads without importing Keras (tf.keras
                        still imports it, when first used)
  end_startup()         ... until here: fd 2 is the real stderr again, for
                        the rest of the run, with no thread or pipe in between
  noise_hidden()        the same around a block (a TFLite conversion)
  is_noise(line)        one of those lines

How the start-up lines are hidden: fd 2 points at an anonymous in-memory
file (memfd) while TensorFlow imports and initialises; end_startup() points
fd 2 back at the real stderr and writes there every captured line that is
not one of NOISE, in order. Nothing stands between TensorFlow and the
terminal afterwards, so a crash's last words (faulthandler's dump, an
abort's or a CHECK failure's line) always arrive. While the capture lasts,
faulthandler (PYTHONFAULTHANDLER=1) writes to the real stderr, and so does
the one line of a Ctrl-C.
"""

import atexit
import contextlib
import faulthandler
import importlib.abc
import importlib.machinery
import os
import re
import signal
import sys
import warnings

# Lines TensorFlow 2.21 writes to stderr at every start on a machine without
# a GPU (C++ logging, which TF_CPP_MIN_LOG_LEVEL does not reach before
# absl::InitializeLog), matched whole. Each says nothing wrong: no GPU found
# where none is, CPU features, oneDNN's fallback for small integer types.
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
    r'E0000 [\d:. ]+\d+ util\.cc:\d+\] oneDNN supports DT_(UINT8|INT32|INT8) '
    r'only on platforms with AVX-512\. Falling back to the default '
    r'Eigen-based implementation if present\.',
    # TFLite's, converting (int8 calibration) and running a model on a CPU
    r'fully_quantize: \d, inference_type: \d+, input_inference_type: \w+, '
    r'output_inference_type: \w+',
    r'INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.',
)]
# tf.lite.Interpreter's deprecation (a Python warning, silenced where used):
# LiteRT's ai_edge_litert takes the same models.
INTERPRETER_DEPRECATION = r'\s*Warning: tf\.lite\.Interpreter is deprecated'

# Only where no NVIDIA driver is installed: then a failed cuInit is expected.
NO_DRIVER_NOISE = re.compile(
    r'E0000 [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*')

_capture = {}  # 'real': the real stderr's fd, 'file': the memfd


def prog():
  """The running script's name, for one-line messages."""
  return os.path.basename(sys.argv[0]) or 'python3'


def is_noise(line, driver=None):
  """Whether a stderr line is one of TensorFlow's benign start-up lines."""
  if driver is None:
    driver = os.path.exists('/proc/driver/nvidia/version')
  return (any(p.fullmatch(line) for p in NOISE) or
          (not driver and NO_DRIVER_NOISE.fullmatch(line) is not None))


def hide_startup_noise():
  """Captures fd 2 until end_startup(). TF_CPP_MIN_LOG_LEVEL=0 (asking for
  TensorFlow's info lines) leaves stderr as it is."""
  if _capture or os.environ.get('TF_CPP_MIN_LOG_LEVEL') == '0' or \
      not hasattr(os, 'memfd_create'):
    return
  try:
    sys.stderr.flush()
    real = os.dup(2)
    memfd = os.memfd_create('cifar10-startup-stderr', os.MFD_CLOEXEC)
  except (AttributeError, OSError, ValueError):  # no stderr to keep clean
    return
  os.set_inheritable(real, False)
  os.dup2(memfd, 2)
  _capture.update(real=real, file=memfd)
  atexit.register(end_startup)  # an exit before start-up ended keeps its lines
  if faulthandler.is_enabled():  # a crash while loading still says why
    _capture['faults'] = os.fdopen(os.dup(real), 'w')
    faulthandler.enable(_capture['faults'])


@contextlib.contextmanager
def noise_hidden():
  """hide_startup_noise() while the block runs (TFLite's converter and
  interpreter say their benign lines on fd 2), end_startup() after; and
  tf.lite.Interpreter's deprecation warning silenced."""
  hide_startup_noise()
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', INTERPRETER_DEPRECATION)
      yield
  finally:
    end_startup()


def end_startup(warm=None):
  """fd 2 back to the real stderr; the captured lines, less NOISE, to it.

  warm: optional function run first, still captured, that makes TensorFlow
  say its once-only start-up lines (train_loop.warm_up: the oneDNN type
  notice comes at the first graph with a small integer type, the cuInit
  one when devices are listed). Idempotent; a no-op without a capture.
  """
  if not _capture:
    return
  if warm is not None:
    warm()
  sys.stderr.flush()
  real, memfd = _capture.pop('real'), _capture.pop('file')
  faults = _capture.pop('faults', None)
  os.dup2(real, 2)
  os.close(real)
  if faults is not None:
    try:
      faulthandler.enable(sys.stderr)
    except (AttributeError, ValueError, OSError, RuntimeError):
      pass
    faults.close()
  os.lseek(memfd, 0, os.SEEK_SET)
  with os.fdopen(memfd, 'rb') as f:
    captured = f.read()
  driver = os.path.exists('/proc/driver/nvidia/version')
  kept = [line for line in captured.splitlines(keepends=True)
          if not is_noise(line.decode('utf-8', 'replace').rstrip('\n'),
                          driver)]
  if kept:
    os.write(2, b''.join(kept))


class _KerasLater(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Refuses the import of Keras while TensorFlow's own __init__ runs.

  TensorFlow 2.21 imports Keras 3 eagerly at the end of `import tensorflow`
  (keras.src.optimizers, which brings matplotlib.pyplot and IPython), in a
  try that passes over an ImportError: a good part of every start (figures
  in docs/performance.md), for a toolkit that uses no Keras. tf.keras stays
  a lazy loader and imports Keras whenever something first uses it.
  TensorFlow also asks where Keras is (importlib.util.find_spec) to set
  up tf.keras's path: that gets the real spec's origin, only its loader
  refuses.
  """

  def find_spec(self, name, path=None, target=None):
    tf = sys.modules.get('tensorflow')
    if name != 'keras' or tf is None or not getattr(
        getattr(tf, '__spec__', None), '_initializing', False):
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is not None:
      spec.loader = self
    return spec

  def create_module(self, spec):
    raise ImportError('Keras is imported when tf.keras is first used')

  def exec_module(self, module):
    pass


def defer_keras():
  """TensorFlow, imported after this, loads without importing Keras."""
  if not any(isinstance(f, _KerasLater) for f in sys.meta_path):
    sys.meta_path.insert(0, _KerasLater())


_interrupted = []
_ignored = []  # the stop signals ignored when the script started


def ignored_at_start():
  """The stop signals (SIGINT, SIGTERM, SIGHUP) that were ignored when the
  script started (`nohup` ignores SIGHUP, a shell's background job SIGINT):
  they stay ignored. Known once quiet_interrupt() ran; else none."""
  return tuple(_ignored)


def interrupted():
  """Whether Ctrl-C was pressed while the script started (importing
  TensorFlow swallows the KeyboardInterrupt, so it is also recorded here)."""
  return bool(_interrupted)


def _on_sigint(signum, frame):
  _interrupted.append(signum)
  raise KeyboardInterrupt


def say(line):
  """One line to the real stderr, captured or not (none: nowhere)."""
  try:
    if not _capture:
      sys.stderr.write(line + '\n')
      sys.stderr.flush()
      return
    sys.stderr.flush()
    os.write(_capture['real'], (line + '\n').encode())
  except (AttributeError, OSError, ValueError):
    pass


def keep_standard_fds():
  """Points a closed fd 0, 1 or 2 (`>&-`, `2>&-`) at /dev/null, so that no
  file the run opens gets the number and receives TensorFlow's logging."""
  for fd in (0, 1, 2):
    try:
      os.fstat(fd)
    except OSError:
      null = os.open(os.devnull, os.O_RDWR)
      if null != fd:
        os.dup2(null, fd)
        os.close(null)


def quiet_interrupt():
  """A Ctrl-C during start-up ends the script with one line, status 130.

  The SIGINT handler records it (see interrupted(), which run_main checks
  once the imports are done) and raises KeyboardInterrupt; one that escapes
  everything prints one line instead of a traceback.
  """
  keep_standard_fds()
  _ignored[:] = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                 if signal.getsignal(s) == signal.SIG_IGN]
  if signal.SIGINT not in _ignored:
    signal.signal(signal.SIGINT, _on_sigint)
  previous = sys.excepthook

  def hook(kind, value, tb):
    if issubclass(kind, KeyboardInterrupt):
      say('%s: interrupted' % prog())
      os._exit(130)
    if _capture:  # a traceback before start-up ended: to the real stderr
      end_startup()
    previous(kind, value, tb)
  sys.excepthook = hook
