"""A checkpoint folder's index: TensorFlow's `checkpoint` file, which lists
the checkpoints a CheckpointManager keeps (and in time rotates out).

  listed_checkpoints(dir)       the steps it lists, and what is wrong with it
  write_index(dir, steps)       rewrites it, atomically
  cleanup_interrupted_saves(dir)  what an interrupted save leaves

Its times are the wall clock's. A CheckpointManager that starts while the
index's last_preserved_timestamp is ahead of the clock (the clock stepped
back since) forgets every checkpoint listed, and so never rotates them out:
such an index is a problem, and is rewritten with times no later than now.
"""

import os
import re
import shutil
import stat
import time

import tensorflow as tf

from cifar10_toolkit import folders
from cifar10_toolkit import run_control

CHECKPOINT_PREFIX = 'ckpt'
INDEX_FILE = 'checkpoint'  # TensorFlow's list of a folder's checkpoints


CHECKPOINT_INDEX_RE = re.compile(r'^%s-(\d+)\.index$' % CHECKPOINT_PREFIX)


def listed_checkpoints(directory):
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
  if not os.path.lexists(path):
    return set(), None
  if not stat.S_ISREG(os.stat(path).st_mode if os.path.exists(path) else 0):
    return set(), 'index file %s is not a regular file' % path
  try:
    state = tf.train.get_checkpoint_state(directory)
  except Exception as e:  # garbage: UnicodeDecodeError, ParseError, ...
    return set(), 'index file %s is unreadable (%s)' % (
        path, run_control.first_line(e))
  if state is None:
    return set(), 'index file %s is unreadable' % path
  ahead = state.last_preserved_timestamp - time.time()
  steps, outside = set(), []
  home = os.path.realpath(directory)
  for p in list(state.all_model_checkpoint_paths) + [
      state.model_checkpoint_path]:
    # (TensorFlow has joined a relative entry with directory already)
    if os.path.realpath(os.path.dirname(p)) != home:
      outside.append(p)
      continue
    m = CHECKPOINT_INDEX_RE.match(os.path.basename(p) + '.index')
    if m:
      steps.add(int(m.group(1)))
  if outside:
    return steps, ('index file %s lists checkpoints outside %s (%s), which '
                   'this run neither uses nor deletes' % (
                       path, directory, ', '.join(sorted(set(outside)))))
  if ahead > 0:
    return steps, ('index file %s is dated %.0f s ahead of this machine\'s '
                   'clock' % (path, ahead))
  return steps, None


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


def write_index(directory, steps):
  """Atomically writes directory's index file listing steps (oldest first).

  With each checkpoint's time (its index file's mtime): CheckpointManager
  takes an entry without one for a checkpoint preserved for ever, and would
  neither list nor rotate it out.
  """
  names = ['%s-%d' % (CHECKPOINT_PREFIX, s) for s in sorted(steps)]
  now = time.time()  # (no later than now: see above)
  times = [min(now, os.path.getmtime(os.path.join(directory, n + '.index')))
           for n in names]
  text = ('model_checkpoint_path: "%s"\n' % names[-1] +
          ''.join('all_model_checkpoint_paths: "%s"\n' % n for n in names) +
          ''.join('all_model_checkpoint_timestamps: %.6f\n' % t
                  for t in times) +
          'last_preserved_timestamp: %.6f\n' % (min(times) - 1))
  folders.write_whole(os.path.join(directory, INDEX_FILE), text,
                      INDEX_FILE + '.tmp-')
