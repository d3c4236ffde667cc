"""What a training run keeps in its checkpoints besides the weights: the
data set it was trained on and the schedule it followed.

  RunRecord(data_set_name, schedule)   saved beside model and state
                                       (checkpoint key 'record/...')
  read(path)                           (data set name, schedule dict) of a
                                       checkpoint
  check_data_set(path, name, what)     a checkpoint of another data set is
                                       one line naming both
  check_newest(candidates, name)       the same for a folder's newest
                                       checkpoint (before a data set is
                                       fetched for it)
  schedule_notes(path, schedule)       the notes of a resume that changes
                                       the schedule

Checkpoints written before the record existed were all trained on the
default data set, CIFAR-10 ('cifar10'), and record no schedule.
"""

import os
import stat

import tensorflow as tf

from cifar10_toolkit import errors

RECORDED_BEFORE = 'cifar10'  # the data set of a checkpoint with no record
_DATA_SET_KEY = 'record/data_set/.ATTRIBUTES/VARIABLE_VALUE'
_SCHEDULE_KEY = 'record/schedule/%s/.ATTRIBUTES/VARIABLE_VALUE'


class WrongDataSetError(errors.UsageError):
  """A checkpoint trained on another data set."""


class RunRecord(tf.Module):
  """The data set's name and the schedule's values, as variables that a
  tf.train.Checkpoint saves (record=RunRecord(...))."""

  def __init__(self, data_set_name, schedule):
    """Args: data_set_name, e.g. 'cifar10'; schedule, name -> float."""
    super().__init__(name='record')
    self.data_set = tf.Variable(data_set_name, trainable=False)
    self.schedule = {k: tf.Variable(float(v), dtype=tf.float64,
                                    trainable=False)
                     for k, v in schedule.items()}


def read(path):
  """(data set name, {schedule name: value}) that checkpoint path records
  (RECORDED_BEFORE and {} for a checkpoint without a record).

  Raises:
    OSError: path's .index is not a regular file (a FIFO is never opened);
    what tf.train.load_checkpoint raises for an unreadable one.
  """
  if not stat.S_ISREG(os.lstat(path + '.index').st_mode):
    raise OSError('%s.index is not a regular file' % path)
  reader = tf.train.load_checkpoint(path)
  keys = reader.get_variable_to_shape_map()
  if _DATA_SET_KEY not in keys:
    return RECORDED_BEFORE, {}
  prefix, suffix = _SCHEDULE_KEY.split('%s')
  schedule = {k[len(prefix):-len(suffix)]: float(reader.get_tensor(k))
              for k in keys if k.startswith(prefix) and k.endswith(suffix)}
  return reader.get_tensor(_DATA_SET_KEY).decode(), schedule


def check_data_set(path, name, what='checkpoint'):
  """Raises WrongDataSetError, naming both data sets, when checkpoint path
  was trained on another data set than `name` (a checkpoint that cannot
  be read is left to the restore that follows)."""
  try:
    trained, _ = read(path)
  except Exception:  # unreadable: the restore names the problem
    return
  if trained != name:
    raise WrongDataSetError(
        '%s %s was trained on --dataset %s, not on --dataset %s: pass '
        '--dataset %s' % (what, path, trained, name, trained))


def check_newest(candidates, name):
  """check_data_set of the newest of a folder's checkpoints, as
  checkpoints.checkpoint_candidates lists them (nothing when there is
  none): a run given the wrong --dataset is told so before its data set is
  fetched."""
  if candidates:
    check_data_set(candidates[0][1], name)


def schedule_notes(path, schedule):
  """Lines noting each schedule value that differs from the one checkpoint
  path recorded (a resume takes the new value from its step on)."""
  try:
    _, before = read(path)
  except Exception:
    return []
  said = {'train_size': 'on %g training examples; it goes on with %g (the '
                        'epochs of the decay follow)'}
  return ['Note: %s was trained %s' % (path, said.get(
      k, 'with --' + k + ' %g; it goes on with %g') % (before[k], v))
          for k, v in schedule.items()
          if k in before and before[k] != float(v)]
