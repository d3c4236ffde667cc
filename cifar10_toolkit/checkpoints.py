"""The one checkpoint convention of both models, and keeping it sound.

  checkpoint_manager(dir, **objects)   <dir>/ckpt-<global step>, five kept
  resume(ckpt, dir, repair)            the newest readable checkpoint,
                                       walking back past damaged ones
  restore(ckpt, path)                  one checkpoint, its model checked
  save_checkpoint(manager, step)       a save that names the file on failure
  checkpoint_candidates(dir)           newest first, from the files
  folder_state(dir)                    what changes when a checkpoint is
                                       added (cheap: for watching)

tf.train.Checkpoint(model=..., state=...) saved by a tf.train.
CheckpointManager: TensorFlow writes the data files first and then replaces
the 'checkpoint' index atomically, so a reader (or a crash) never sees a
half-written checkpoint.
"""

import os
import re
import shutil
import time

import tensorflow as tf

from cifar10_toolkit import errors
from cifar10_toolkit.checkpoint_index import (  # noqa: F401 (its names)
    CHECKPOINT_PREFIX, INDEX_FILE, CHECKPOINT_INDEX_RE, listed_checkpoints,
    cleanup_interrupted_saves, write_index)
from cifar10_toolkit import run_control
from cifar10_toolkit import run_record

MAX_CHECKPOINTS_TO_KEEP = 5


WrongModelError = run_record.WrongModelError  # a checkpoint of another model


class UnreadableCheckpointError(errors.UsageError):
  """A checkpoint whose files cannot be read; reason says why."""

  def __init__(self, message, reason):
    super().__init__(message)
    self.reason = reason


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


LOCK_FILE = '.lock'                # held by the trainer writing a train_dir
WORKER_DIR_PREFIX = '.worker-'     # a non-chief worker's own checkpoints


# What distinguishes the two models' checkpoints (a variable of each).
MODEL_KINDS = {'conv1/weights': 'convnet', 'layer1/weights': 'fully connected'}


def checkpoint_candidates(directory):
  """Every checkpoint a folder holds or lists, newest first.

  The files are the truth and the index file a hint: a checkpoint whose
  ckpt-N.index is on disk counts even if the index does not list it (a crash
  between writing it and registering it), and one the index lists whose files
  are gone is reported rather than silently skipped.

  Returns:
    (list of (step, path), index problem or None).
  """
  listed, problem = listed_checkpoints(directory)
  on_disk = set()
  if os.path.isdir(directory):
    for name in os.listdir(directory):
      m = CHECKPOINT_INDEX_RE.match(name)
      if m:
        on_disk.add(int(m.group(1)))
  steps = sorted(listed | on_disk, reverse=True)
  return [(s, os.path.join(directory, '%s-%d' % (CHECKPOINT_PREFIX, s)))
          for s in steps], problem


def folder_state(directory):
  """What changes when a checkpoint is saved into directory, or one is
  repaired or replaced: the index file's size and time, and the name, size
  and time of each checkpoint file. A listing and a stat a file, cheap
  enough to look every few seconds.

  Returns:
    A comparable value; None when directory is missing.
  """
  try:
    names = sorted(n for n in os.listdir(directory)
                   if n.startswith(CHECKPOINT_PREFIX + '-'))
  except OSError:
    return None
  files = []
  for name in names + [INDEX_FILE]:
    try:
      st = os.stat(os.path.join(directory, name))
    except OSError:  # gone meanwhile, or no index
      continue
    files.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
  return tuple(files)


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
    return run_control.first_line(e)
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


def restore(ckpt, path, what='checkpoint', data_set=None, model=None):
  """Restores path into ckpt (trained on --dataset data_set with --model
  model, each if given: run_record.check).

  Raises:
    errors.UsageError: the checkpoint holds another model, or does not fit this one
      (another shape), or cannot be read; one line naming the file.
  """
  run_record.check(path, data_set, model, what)
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
    lacking = re.findall(r"<tf\.Variable '([^':]+)", str(e))
    if lacking:  # variables the model has and the checkpoint does not
      raise errors.UsageError(
          '%s %s lacks %s of this model (made by an earlier version of '
          'the model module?)' % (what, path, ', '.join(sorted(lacking))))
    raise errors.UsageError('%s %s does not fit this model (%s)' %
                     (what, path, run_control.first_line(e)))


def is_file_of(name, base):
  """Whether the file called name is one of checkpoint base's (base:
  'ckpt-40'): its .index or a .data-... shard."""
  return name == base + '.index' or name.startswith(base + '.data-')


def _set_aside_unreadable(directory, paths):
  dest = os.path.join(directory, time.strftime('unreadable-%Y%m%d-%H%M%S'))
  os.makedirs(dest, exist_ok=True)
  for path in paths:
    base = os.path.basename(path)
    for name in os.listdir(directory):
      if is_file_of(name, base):
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


def resume(ckpt, directory, repair=False, skip=None, data_set=None,
           model=None):
  """Restores the newest checkpoint of directory that reads, walking back.

  Each checkpoint skipped on the way is named in one line with the reason.
  A checkpoint of another model stops the walk at once (errors.UsageError). With
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
    data_set, model: the --dataset and --model names the checkpoints
      must have been trained with (run_record.check), or None.

  Returns:
    The path restored, or None when the folder holds no checkpoint.

  Raises:
    errors.UsageError: checkpoints exist but none reads (nothing is changed), or
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
      restore(ckpt, path, data_set=data_set, model=model)
    except (WrongModelError, run_record.WrongDataSetError):
      raise
    except errors.UsageError as e:  # unreadable, or of another shape
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
      raise errors.UsageError(
          'no checkpoint in %s can be read (%s); nothing was '
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
    listed, _ = listed_checkpoints(directory)
    if index_problem or bad or set(good) != listed:
      write_index(directory, good)
  return restored


def save_checkpoint(manager, step):
  """manager.save(step); a failure (e.g. a full disk) removes what it half
  wrote and becomes one errors.UsageError naming the folder and the last good one."""
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
    raise errors.UsageError('cannot save checkpoint %s in %s (%s); %s' % (
        base, directory, run_control.first_line(e),
        'the last good checkpoint is %s' % manager.latest_checkpoint
        if manager.latest_checkpoint else 'there is no earlier checkpoint'))
