"""What every script of the toolkit shares.

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

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time

import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

import cli
import hardware
from cifar10_input import DataSetError

CHECKPOINT_PREFIX = 'ckpt'
MAX_CHECKPOINTS_TO_KEEP = 5
HISTOGRAM_BUCKETS = 30  # as tf.summary.histogram


class UsageError(Exception):
  """A flag value or a request that cannot be carried out."""


class WrongModelError(UsageError):
  """A checkpoint of the other model."""


class UnreadableCheckpointError(UsageError):
  """A checkpoint whose files cannot be read; reason says why."""

  def __init__(self, message, reason):
    super().__init__(message)
    self.reason = reason


class NanLossError(Exception):
  """The loss became NaN or infinite."""


def run_main(main, argv=None):
  """Runs main(argv); expected failures become one line on stderr.

  Expected: the toolkit's own errors (DataSetError, UsageError,
  NanLossError), the file system's (OSError) and TensorFlow's (OpError: a
  file it cannot read or write). Anything else is a bug and keeps its
  traceback.

  Exit status: 0 done, 1 a data, checkpoint or usage problem, a NaN loss or
  a file system error (full disk, read-only folder: one line naming the file),
  130 / 143 / 129 stopped by Ctrl-C / SIGTERM / SIGHUP (after saving).
  """
  prog = os.path.basename(sys.argv[0])
  hardware.set_memory_growth()  # before anything runs on a GPU
  if not isinstance(sys.stdout, ClosableConsole):
    sys.stdout = ClosableConsole(sys.stdout)
  if cli.interrupted():  # Ctrl-C while TensorFlow loaded, which swallows it
    sys.stderr.write('%s: interrupted\n' % prog)
    return 130
  try:
    return main(argv)
  except (DataSetError, UsageError, NanLossError) as e:  # the toolkit's own
    sys.stderr.write('%s: error: %s\n' % (prog, e))
    return 1
  except OSError as e:
    sys.stderr.write('%s: error: %s\n' % (prog, e))
    return 1
  except tf.errors.OpError as e:
    sys.stderr.write('%s: error: %s\n' % (prog, first_line(e)))
    return 1
  except KeyboardInterrupt:
    sys.stderr.write('%s: interrupted\n' % prog)
    return 130
  except Stopped as e:
    sys.stderr.write('%s: %s; nothing was left half-written\n' % (prog, e))
    return 128 + e.signum


class ClosableConsole:
  """stdout that a closed reader cannot stop: after a broken pipe (the
  reader of `... | head` gone, a terminal closed) the lines go nowhere and
  the run goes on, saving as usual."""

  def __init__(self, stream):
    self._stream = stream

  def _guard(self, method, *args):
    try:
      return getattr(self._stream, method)(*args)
    except (BrokenPipeError, ValueError):  # EPIPE; or the stream was closed
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


def now(seconds=None):
  """The tutorial's console timestamp: of `seconds` since the epoch, or now."""
  return datetime.datetime.fromtimestamp(
      time.time() if seconds is None else seconds)


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


# --------------------------------------------------------------------------
# Finding, checking and repairing checkpoints
# --------------------------------------------------------------------------

INDEX_FILE = 'checkpoint'          # TensorFlow's list of a folder's checkpoints
LOCK_FILE = '.lock'                # held by the trainer writing a train_dir
WORKER_DIR_PREFIX = '.worker-'     # a non-chief worker's own checkpoints
# What distinguishes the two models' checkpoints (a variable of each).
MODEL_KINDS = {'conv1/weights': 'convnet', 'layer1/weights': 'fully connected'}
_CKPT_RE = re.compile(r'^%s-(\d+)\.index$' % CHECKPOINT_PREFIX)


def first_line(e):
  """The first line of an error's message, without TensorFlow's op prefix
  ('{{function_node ...}} ') and suffix (' [Op:SaveV2]')."""
  text = getattr(e, 'message', None) or str(e)
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', text).strip()
  text = re.sub(r'\s*\[Op:\w+\]$', '', text.splitlines()[0] if text else '')
  return text or type(e).__name__


def _listed_checkpoints(directory):
  """Steps listed in directory's 'checkpoint' index file, and a problem.

  Only checkpoints inside directory count: an index that names another
  folder's (a run folder copied, or its index edited or restored from
  elsewhere) is a problem, since a CheckpointManager would rotate, that is
  delete, those files.

  Returns:
    (set of steps, None) or (the steps inside directory, one-line
    description of why the index file cannot be used as it is); a missing
    index file is no problem.
  """
  path = os.path.join(directory, INDEX_FILE)
  if not os.path.exists(path):
    return set(), None
  try:
    state = tf.train.get_checkpoint_state(directory)
  except Exception as e:  # garbage: UnicodeDecodeError, ParseError, ...
    return set(), 'index file %s is unreadable (%s)' % (path, first_line(e))
  if state is None:
    return set(), 'index file %s is unreadable' % path
  steps, outside = set(), []
  home = os.path.realpath(directory)
  for p in list(state.all_model_checkpoint_paths) + [
      state.model_checkpoint_path]:
    if os.path.realpath(os.path.dirname(os.path.join(directory, p))) != home:
      outside.append(p)
      continue
    m = _CKPT_RE.match(os.path.basename(p) + '.index')
    if m:
      steps.add(int(m.group(1)))
  if outside:
    return steps, ('index file %s lists checkpoints outside %s (%s), which '
                   'this run neither uses nor deletes' % (
                       path, directory, ', '.join(sorted(set(outside)))))
  return steps, None


def checkpoint_candidates(directory):
  """Every checkpoint a folder holds or lists, newest first.

  The files are the truth and the index file a hint: a checkpoint whose
  ckpt-N.index is on disk counts even if the index does not list it (a crash
  between writing it and registering it), and one the index lists whose files
  are gone is reported rather than silently skipped.

  Returns:
    (list of (step, path), index problem or None).
  """
  listed, problem = _listed_checkpoints(directory)
  on_disk = set()
  if os.path.isdir(directory):
    for name in os.listdir(directory):
      m = _CKPT_RE.match(name)
      if m:
        on_disk.add(int(m.group(1)))
  steps = sorted(listed | on_disk, reverse=True)
  return [(s, os.path.join(directory, '%s-%d' % (CHECKPOINT_PREFIX, s)))
          for s in steps], problem


def checkpoint_problem(path):
  """Why the checkpoint at path cannot be read, or None if all of it reads.

  Reads every tensor, so a missing, truncated or corrupted (checksum) index or
  data file is found.
  """
  if not os.path.exists(path + '.index'):
    return '%s.index is missing' % os.path.basename(path)
  try:
    reader = tf.train.load_checkpoint(path)
    for key in reader.get_variable_to_shape_map():
      reader.get_tensor(key)
  except Exception as e:  # IndexError, DataLossError, NotFoundError, ...
    return first_line(e)
  return None


def checkpoint_kind(path):
  """'convnet', 'fully connected' or None: which model a checkpoint holds."""
  try:
    keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  except Exception:  # unreadable: no kind
    return None
  for name, kind in MODEL_KINDS.items():
    if any(k.startswith('model/params/%s/' % name.replace('/', '.S'))
           for k in keys):
      return kind
  return None


def _model_kind(ckpt):
  params = getattr(getattr(ckpt, 'model', None), 'params', {})
  return next((MODEL_KINDS[k] for k in params if k in MODEL_KINDS), None)


def restore(ckpt, path, what='checkpoint'):
  """Restores path into ckpt.

  Raises:
    UsageError: the checkpoint holds another model, or does not fit this one
      (another shape), or cannot be read; one line naming the file.
  """
  try:
    ckpt.restore(path).expect_partial().assert_existing_objects_matched()
  except Exception as e:  # AssertionError, ValueError, OpError, IndexError
    want, have = _model_kind(ckpt), checkpoint_kind(path)
    if want and have and want != have:
      raise WrongModelError('%s %s is a %s checkpoint, not a %s one' %
                       (what, path, have, want))
    problem = checkpoint_problem(path)
    if problem:
      raise UnreadableCheckpointError(
          '%s %s cannot be read (%s)' % (what, path, problem), problem)
    raise UsageError('%s %s does not fit this model (%s)' %
                     (what, path, first_line(e)))


def cleanup_interrupted_saves(directory):
  """Removes what an interrupted save leaves (ckpt-N_temp/ folders, temporary
  index files); says so in one line. Returns the names removed."""
  if not os.path.isdir(directory):
    return []
  debris = [n for n in os.listdir(directory)
            if (n.startswith(CHECKPOINT_PREFIX + '-') and n.endswith('_temp'))
            or n.startswith(INDEX_FILE + '.tmp') or '.tempstate' in n]
  for name in debris:
    path = os.path.join(directory, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.remove(path)
  if debris:
    print('Removed the leftovers of an interrupted save in %s: %s' %
          (directory, ', '.join(sorted(debris))), flush=True)
  return debris


def _write_index(directory, steps):
  """Atomically writes directory's index file listing steps (oldest first).

  With each checkpoint's time (its index file's mtime): CheckpointManager
  takes an entry without one for a checkpoint preserved for ever, and would
  neither list nor rotate it out.
  """
  names = ['%s-%d' % (CHECKPOINT_PREFIX, s) for s in sorted(steps)]
  times = [os.path.getmtime(os.path.join(directory, n + '.index'))
           for n in names]
  text = ('model_checkpoint_path: "%s"\n' % names[-1] +
          ''.join('all_model_checkpoint_paths: "%s"\n' % n for n in names) +
          ''.join('all_model_checkpoint_timestamps: %.6f\n' % t
                  for t in times) +
          'last_preserved_timestamp: %.6f\n' % (min(times) - 1))
  tmp = os.path.join(directory, INDEX_FILE + '.tmp-toolkit')
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(directory, INDEX_FILE))


def _set_aside_unreadable(directory, paths):
  dest = os.path.join(directory, time.strftime('unreadable-%Y%m%d-%H%M%S'))
  os.makedirs(dest, exist_ok=True)
  for path in paths:
    base = os.path.basename(path)
    for name in os.listdir(directory):
      if name == base + '.index' or name.startswith(base + '.data-'):
        shutil.move(os.path.join(directory, name), dest)
  return dest


def _fingerprint(path):
  """Name, size and modification time of each file of a checkpoint (or of
  one file): what changes when it is repaired, rewritten or replaced."""
  folder, base = os.path.split(path)
  out = []
  try:
    for name in sorted(os.listdir(folder)):
      if name == base or name.startswith(base + '.'):
        st = os.stat(os.path.join(folder, name))
        out.append((name, st.st_size, st.st_mtime_ns))
  except OSError:
    pass
  return tuple(out)


def resume(ckpt, directory, repair=False, skip=None):
  """Restores the newest checkpoint of directory that reads, walking back.

  Each checkpoint skipped on the way is named in one line with the reason.
  A checkpoint of another model stops the walk at once (UsageError). With
  repair (the trainer, which holds the folder's lock): leftovers of
  interrupted saves are removed, unreadable checkpoints are moved to
  directory/unreadable-<time>/ (never deleted), and the index file is
  rewritten to list exactly the readable checkpoints on disk, so that the
  CheckpointManager keeps (and in time rotates out) only good ones.

  Args:
    ckpt: the tf.train.Checkpoint to restore into.
    directory: the checkpoint folder.
    repair: clean up and rewrite the folder (see above).
    skip: optional dict path -> fingerprint of its files: the ones found
      unreadable, and INDEX_FILE once its problem is said, are added to it,
      and not tried again while their files stay as they were (the
      evaluator names each damaged checkpoint, and a damaged index, once,
      and tries it again once it is repaired or rewritten).

  Returns:
    The path restored, or None when the folder holds no checkpoint.

  Raises:
    UsageError: checkpoints exist but none reads (nothing is changed), or
      one holds another model.
  """
  if repair:
    cleanup_interrupted_saves(directory)
  candidates, index_problem = checkpoint_candidates(directory)
  skipped = lambda p: skip is not None and skip.get(p) == _fingerprint(p)
  index = os.path.join(directory, INDEX_FILE)
  if index_problem and not skipped(index):
    print('Note: %s; using the checkpoint files in the folder' % index_problem,
          flush=True)
    if skip is not None:
      skip[index] = _fingerprint(index)
  restored, bad, reasons = None, [], []
  for step, path in candidates:
    if skipped(path):
      continue
    try:
      restore(ckpt, path)
    except WrongModelError:
      raise
    except UsageError as e:  # unreadable, or of another shape
      reason = getattr(e, 'reason', None) or str(e)
      print('Skipping checkpoint %s: %s' % (path, reason), flush=True)
      if skip is not None:
        skip[path] = _fingerprint(path)
      bad.append(path)
      reasons.append('%s: %s' % (os.path.basename(path), reason))
      continue
    restored = path
    break
  if restored is None:
    if candidates and not all(skipped(p) for _, p in candidates):
      raise UsageError('no checkpoint in %s can be read (%s); nothing was '
                       'changed' % (directory, '; '.join(reasons)))
    if repair and index_problem:  # nothing of this folder's to list
      os.remove(os.path.join(directory, INDEX_FILE))
    return None
  if repair:
    step = int(restored.rsplit('-', 1)[1])
    good = [step]
    for s, path in candidates:
      problem = checkpoint_problem(path) if s < step else None
      if problem:
        print('Skipping checkpoint %s: %s' % (path, problem), flush=True)
        bad.append(path)
      elif s < step:
        good.append(s)
    if bad:
      print('Moved the unreadable checkpoint(s) to %s' %
            _set_aside_unreadable(directory, bad), flush=True)
    listed, _ = _listed_checkpoints(directory)
    if index_problem or bad or set(good) != listed:
      _write_index(directory, good)
  return restored


def save_checkpoint(manager, step):
  """manager.save(step); a failure (e.g. a full disk) removes what it half
  wrote and becomes one UsageError naming the folder and the last good one."""
  try:
    return manager.save(checkpoint_number=step)
  except (tf.errors.OpError, OSError) as e:
    directory = manager.directory
    base = '%s-%d' % (CHECKPOINT_PREFIX, step)
    cleanup_interrupted_saves(directory)
    if os.path.join(directory, base) not in manager.checkpoints:
      for name in os.listdir(directory):
        if name.startswith(base + '.'):
          os.remove(os.path.join(directory, name))
    raise UsageError('cannot save checkpoint %s in %s (%s); %s' % (
        base, directory, first_line(e),
        'the last good checkpoint is %s' % manager.latest_checkpoint
        if manager.latest_checkpoint else 'there is no earlier checkpoint'))


def prepare_dir(path, flag):
  """Creates the folder a flag names, checking that it can be written.

  Raises:
    UsageError: it is a file or a dangling symbolic link, or cannot be
      created or written.
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise UsageError('%s %s is a file, not a folder' % (flag, path))
  if os.path.islink(path) and not os.path.exists(path):
    raise UsageError('%s %s is a symbolic link that leads nowhere (a loop, or '
                     'its target %s is missing)' % (flag, path,
                                                    os.readlink(path)))
  try:
    os.makedirs(path, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=path, prefix='.probe-')
    probe.close()
  except OSError as e:
    raise UsageError('%s %s cannot be written (%s)' % (
        flag, path, e.strerror or first_line(e)))


def summary_writer(logdir, flag='--train_dir'):
  """tf.summary.create_file_writer, with one-line errors naming the flag."""
  try:
    return tf.summary.create_file_writer(logdir)
  except tf.errors.OpError as e:
    raise UsageError('%s %s: cannot write event files (%s)' % (
        flag, logdir, first_line(e)))


class TrainDirLock:
  """An exclusive lock on a train_dir, held while a trainer runs.

  flock on train_dir/.lock: the kernel releases it on any exit, kill -9
  included, so a lock left by a crash is never an obstacle. The file holds the
  holder's pid, host and start time, for the error a second trainer gets.
  The file itself is left in place (removing it would race a new holder).
  """

  def __init__(self, train_dir):
    self.path = os.path.join(train_dir, LOCK_FILE)
    self.train_dir = train_dir
    self._fd = None

  def __enter__(self):
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 1000).decode('utf-8', 'replace').strip()
      os.close(fd)
      raise UsageError('--train_dir %s is in use by %s; stop that run or use '
                       'another --train_dir' % (self.train_dir,
                                                holder or 'another trainer'))
    os.ftruncate(fd, 0)
    os.write(fd, ('%s (pid %d on %s, since %s)\n' % (
        os.path.basename(sys.argv[0]) or 'python', os.getpid(),
        socket.gethostname(), time.strftime('%Y-%m-%d %H:%M:%S'))).encode())
    self._fd = fd
    return self

  def __exit__(self, *exc):
    if self._fd is not None:
      os.close(self._fd)  # releases the flock
      self._fd = None
    return False


# The signals after which training saves before it exits: Ctrl-C, kill's
# default, and a hang-up (the terminal or SSH session that ran it went away).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


_pending = []  # stop signals received before GracefulStop took over


def record_stop_signals():
  """Until GracefulStop takes over, a stop signal is only recorded, so that
  one arriving while training starts (a cluster forming, the data loading)
  stops the run at the first chance instead of being lost."""
  for s in STOP_SIGNALS:
    signal.signal(s, lambda signum, frame: _pending.append(signum))


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
  old = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
  try:
    yield
  finally:
    for s, h in old.items():
      signal.signal(s, h)


class GracefulStop:
  """While active, STOP_SIGNALS only set `signum`; the loop then saves.

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
    for s in STOP_SIGNALS:
      self._old[s] = signal.signal(s, self._handle)
    if _pending:  # one that came while the run started
      self._handle(_pending.pop(), None)
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


def hparams_values(args, **effective):
  """The run's hyperparameters for HParams: every flag, as the run used it.

  Args:
    args: the parsed flags.
    **effective: values the run settled on where a flag said 'auto' or was
      left out (the seed drawn, the precision picked, the data source used).

  Returns:
    dict flag name -> bool, int, float or str, sorted by name; a flag still
    unset (one the run did without, e.g. --profile_steps) is 'off'.
  """
  values = dict(vars(args), **effective)
  return {k: 'off' if v is None else
          v if isinstance(v, (bool, int, float, str)) else str(v)
          for k, v in sorted(values.items())}


def write_hparams(values, metrics, trial_id=None):
  """Writes a run's hyperparameters to TensorBoard's HParams dashboard.

  Args:
    values: hparams_values(): a column each.
    metrics: list of (tag, group, display name): the scalars to show beside
      them; group is the sub-folder of the run that holds the tag ('' for the
      run itself).
    trial_id: the session group: runs written with the same trial_id (a
      training run and the evaluation of its checkpoints, in whatever
      folders) make one row, each bringing its own metrics.
  """
  from tensorboard.plugins.hparams import api as hp
  hp.hparams_config(
      hparams=[hp.HParam(k) for k in values],
      metrics=[hp.Metric(tag, group=group or None, display_name=name)
               for tag, group, name in metrics])
  hp.hparams(values, trial_id=trial_id)


HPARAMS_FILE = 'hparams.json'


def save_run_hparams(train_dir, values, trial_id):
  """Keeps a run's HParams in train_dir, for the evaluator to join its row.

  Written whole or not at all (a temporary file renamed into place).
  """
  path = os.path.join(train_dir, HPARAMS_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump({'trial_id': trial_id, 'hparams': values}, f, indent=1)
  os.replace(tmp, path)


def load_run_hparams(train_dir):
  """(trial_id, values) that save_run_hparams kept, or (None, None)."""
  try:
    with open(os.path.join(train_dir, HPARAMS_FILE)) as f:
      kept = json.load(f)
    return str(kept['trial_id']), dict(kept['hparams'])
  except (OSError, ValueError, KeyError, TypeError):
    return None, None


class Profile:
  """--profile_steps A,B: a profiler trace from step A to step B.

  Call at(step) between steps; it starts the trace at A and stops it at B.
  until(step) is the next step at which a loop must pause for it. As a
  context manager, it stops a trace in progress on leaving.
  """

  def __init__(self, steps, logdir):
    self.steps, self.logdir, self.active = steps, logdir, False

  def until(self, step):
    for s in self.steps or ():
      if s > step:
        return s
    return None

  def at(self, step):
    if not self.steps:
      return
    if step == self.steps[0] and not self.active:
      tf.profiler.experimental.start(self.logdir)
      self.active = True
      print('Profiling steps %d to %d into %s' % (
          self.steps[0] + 1, self.steps[1], self.logdir), flush=True)
    elif step >= self.steps[1] and self.active:
      self.stop()

  def stop(self):
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False

  def __enter__(self):
    return self

  def __exit__(self, *exc):  # a trace in progress is saved, whatever happened
    self.stop()
    return False


def duration_text(seconds):
  """'2 h 05 min' or '3 min 07 s'."""
  hours, rest = divmod(int(seconds), 3600)
  return ('%d h %02d min' % (hours, rest // 60) if hours else
          '%d min %02d s' % divmod(rest, 60))


def progress_line(step, max_steps, examples_per_sec, examples_per_step):
  """'N of M steps (P%), about T to go at the current speed'."""
  left = (max_steps - step) * examples_per_step / max(examples_per_sec, 1e-9)
  return '%s: step %d of %d (%.1f%%), about %s to go at %.0f examples/sec' % (
      now(), step, max_steps, 100.0 * step / max_steps, duration_text(left),
      examples_per_sec)


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
  # No Python branch on tensors (this runs inside tf.function, with or
  # without AutoGraph): a single value goes wholly into the last bucket, as
  # TensorBoard does, and its edges all equal that value.
  single = hi <= lo
  counts = tf.where(
      single, tf.one_hot(buckets - 1, buckets, on_value=tf.size(x),
                         dtype=tf.int32),
      tf.histogram_fixed_width(x, tf.stack([lo, tf.where(single, lo + 1, hi)]),
                               nbins=buckets))
  edges = tf.concat([tf.linspace(lo64, hi64, buckets + 1)[:-1], [hi64]], 0)
  left, right = edges[:-1], edges[1:]
  return tf.stack([left, right, tf.cast(counts, tf.float64)], axis=1)


def write_histograms(values, step, suffix=''):
  """Writes name -> tensor histograms to the default summary writer."""
  for name, value in values.items():
    tag = name + suffix
    tf.summary.write(
        tag, histogram_buckets(value), step=step,
        metadata=histogram_metadata.create_summary_metadata(tag, ''))


def write_graph(fn, args):
  """Calls the tf.function fn(*args) and writes its graph (the Graphs tab).

  The graph of fn's own concrete function, not a trace of whatever ran:
  a trace window also records functions TensorFlow instantiates meanwhile
  (its own summary-writing function, the first time in a process).

  Returns fn's result.
  """
  result = fn(*args)
  tf.summary.graph(fn.get_concrete_function(*args).graph)
  return result
