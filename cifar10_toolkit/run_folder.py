"""A run's folder: checked before anything is written, locked while a
trainer writes it, set aside on request.

  prepare_dir(path, flag)    a folder flag checked (and made): one line if not
  removed_if_empty(made)     the folders made, removed if a failed run left
                             them empty
  remove_own_folder(path)    a worker's folder removed, never through a link
  TrainDirLock(train_dir)    one trainer per folder (an OS lock, released on
                             any exit)
  set_aside(train_dir)       --fresh: the previous run to previous-<time>/
"""

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import sys
import tempfile
import time

from cifar10_toolkit import checkpoints
from cifar10_toolkit import folders
from cifar10_toolkit import errors
from cifar10_toolkit import run_control


def prepare_dir(path, flag, own=True):
  """Creates the folder a flag names, checking that it can be written.

  Args:
    own: the folder must belong to this user (a run's own folder: one that
      another user made, e.g. under /tmp, could hold links planted to make
      the run write elsewhere); False for a parent folder such as an
      export's.

  Returns:
    The folders this call made, outermost first (for removed_if_empty).

  Raises:
    errors.UsageError: it is a file or a dangling symbolic link, belongs to
      another user, or cannot be created or written.
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.UsageError('%s %s is a file, not a folder' % (flag, path))
  if os.path.islink(path) and not os.path.exists(path):
    raise errors.UsageError(
        '%s %s is a symbolic link that leads nowhere (a loop, or '
        'its target %s is missing)' % (flag, path, os.readlink(path)))
  made = folders.new_folders(path)
  try:
    os.makedirs(path, exist_ok=True)
    owner = os.stat(path).st_uid
    probe = tempfile.NamedTemporaryFile(dir=path, prefix='.probe-')
    probe.close()
  except OSError as e:
    raise errors.UsageError('%s %s cannot be written (%s)' % (
        flag, path, e.strerror or run_control.first_line(e)))
  if own and owner != os.geteuid():
    raise errors.UsageError(
        '%s %s belongs to another user (uid %d); use a folder of your own'
        % (flag, path, owner))
  return made


@contextlib.contextmanager
def removed_if_empty(made):
  """A run that fails (or is stopped) leaves none of the folders it made
  (prepare_dir's) empty behind; one that wrote anything into them keeps
  them."""
  try:
    yield
  except BaseException:
    folders.remove_if_empty(made)
    raise


def remove_own_folder(path):
  """Removes a folder the toolkit made (a worker's), never what a symbolic
  link in its place leads to: the link alone goes."""
  if os.path.islink(path) or os.path.isfile(path):
    os.unlink(path)
  elif os.path.isdir(path):
    shutil.rmtree(path, ignore_errors=True)


class TrainDirLock:
  """An exclusive lock on a train_dir, held while a trainer runs.

  flock on train_dir/.lock: the kernel releases it on any exit, kill -9
  included, so a lock left by a crash is never an obstacle. The file holds the
  holder's pid, host and start time, for the error a second trainer gets.
  The file itself is left in place (removing it would race a new holder).
  """

  def __init__(self, train_dir):
    self.path = os.path.join(train_dir, checkpoints.LOCK_FILE)
    self.train_dir = train_dir
    self._fd = None

  def __enter__(self):
    try:  # (never through a symbolic link planted in its place)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW |
                   os.O_CLOEXEC, 0o644)
    except OSError as e:
      if e.errno != errno.ELOOP:
        raise
      raise errors.UsageError(
          '%s is a symbolic link (to %s), not the lock this toolkit keeps; '
          'remove it' % (self.path, os.readlink(self.path)))
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 1000).decode('utf-8', 'replace').strip()
      os.close(fd)
      raise errors.UsageError(
          '--train_dir %s is in use by %s; stop that run or use '
          'another --train_dir' %
          (self.train_dir, holder or 'another trainer'))
    os.ftruncate(fd, 0)
    os.write(fd, ('%s (pid %d on %s, since %s)\n' % (
        os.path.basename(sys.argv[0]) or 'python', os.getpid(),
        socket.gethostname(), time.strftime('%Y-%m-%d %H:%M:%S'))).encode())
    self._fd = fd
    return self

  def __exit__(self, kind, *exc):
    if self._fd is not None:
      try:  # a run that failed before writing anything leaves no trace
        if kind is not None and os.listdir(self.train_dir) == [
            checkpoints.LOCK_FILE]:
          os.unlink(self.path)  # (while held: no other holder to race)
      except OSError:  # (the failure in hand is the one to report)
        pass
      os.close(self._fd)  # releases the flock
      self._fd = None
    return False


def set_aside(train_dir, keep=(), keep_names=()):
  """Moves a previous run's files to train_dir/previous-<time>/ (--fresh).

  keep: folders left where they are if train_dir holds them (the data set:
  --data_dir inside --train_dir); keep_names: entries of train_dir left
  where they are (the data set's folder and archive, when data_dir is
  train_dir)."""
  if not os.path.isdir(train_dir):
    return
  kept = [os.path.realpath(k) for k in keep]

  def holds_kept(entry):
    path = os.path.realpath(os.path.join(train_dir, entry))
    return any(k == path or k.startswith(path + os.sep) for k in kept)
  entries = [e for e in os.listdir(train_dir)
             if not e.startswith(('previous-', checkpoints.WORKER_DIR_PREFIX))
             and e != checkpoints.LOCK_FILE and not holds_kept(e)
             and e not in keep_names]
  if not entries:
    return
  dest = os.path.join(train_dir, time.strftime('previous-%Y%m%d-%H%M%S'))
  os.makedirs(dest)
  for e in entries:
    shutil.move(os.path.join(train_dir, e), dest)
  print('Moved the previous run in %s to %s' % (train_dir, dest))
