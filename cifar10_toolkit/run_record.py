"""What a training run keeps in its checkpoints besides the weights: the
data set it was trained on, the model module, and the schedule it followed.

  RunRecord(data_set_name, schedule, model_name)
                                       saved beside model and state
                                       (checkpoint key 'record/...')
  read(path)                           Record(data_set, schedule, model)
                                       of a checkpoint
  check(path, data_set, model, what)   a checkpoint of another data set or
                                       model is one line naming both
  check_newest(candidates, data_set, model)
                                       the same for a folder's newest
                                       checkpoint (before a data set is
                                       fetched for it)
  schedule_notes(path, schedule)       the notes of a resume that changes
                                       the schedule

Checkpoints written before the record existed were all trained on the
default data set, CIFAR-10 ('cifar10'), and record no schedule; those
written before it named the model were all of the convnet ('convnet'). The
fully connected model's record names none.
"""

import collections
import os
import stat

import tensorflow as tf

from cifar10_toolkit import errors

RECORDED_BEFORE = 'cifar10'  # the data set of a checkpoint with no record
MODEL_BEFORE = 'convnet'  # the model of a record that names none
_DATA_SET_KEY = 'record/data_set/.ATTRIBUTES/VARIABLE_VALUE'
_MODEL_KEY = 'record/model/.ATTRIBUTES/VARIABLE_VALUE'
Record = collections.namedtuple('Record', ['data_set', 'schedule', 'model'])
_SCHEDULE_KEY = 'record/schedule/%s/.ATTRIBUTES/VARIABLE_VALUE'


class WrongDataSetError(errors.UsageError):
  """A checkpoint trained on another data set."""


class WrongModelError(errors.UsageError):
  """A checkpoint of another model."""


class RunRecord(tf.Module):
  """The data set's name, the schedule's values and the model's name, as
  variables that a tf.train.Checkpoint saves (record=RunRecord(...))."""

  def __init__(self, data_set_name, schedule, model_name=None):
    """Args: data_set_name, e.g. 'cifar10'; schedule, name -> float;
    model_name, e.g. 'convnet' (plugins.name_of), or None."""
    super().__init__(name='record')
    self.data_set = tf.Variable(data_set_name, trainable=False)
    if model_name:
      self.model = tf.Variable(model_name, trainable=False)
    self.schedule = {k: tf.Variable(float(v), dtype=tf.float64,
                                    trainable=False)
                     for k, v in schedule.items()}


def read(path):
  """The Record of checkpoint path: data set name, {schedule name: value},
  model name (RECORDED_BEFORE, {} and MODEL_BEFORE for a checkpoint without
  a record; MODEL_BEFORE for a record that names no model).

  Raises:
    OSError: path's .index is not a regular file (a FIFO is never opened);
    what tf.train.load_checkpoint raises for an unreadable one.
  """
  if not stat.S_ISREG(os.lstat(path + '.index').st_mode):
    raise OSError('%s.index is not a regular file' % path)
  reader = tf.train.load_checkpoint(path)
  keys = reader.get_variable_to_shape_map()
  if _DATA_SET_KEY not in keys:
    return Record(RECORDED_BEFORE, {}, MODEL_BEFORE)
  prefix, suffix = _SCHEDULE_KEY.split('%s')
  schedule = {k[len(prefix):-len(suffix)]: float(reader.get_tensor(k))
              for k in keys if k.startswith(prefix) and k.endswith(suffix)}
  model = (reader.get_tensor(_MODEL_KEY).decode() if _MODEL_KEY in keys
           else MODEL_BEFORE)
  return Record(reader.get_tensor(_DATA_SET_KEY).decode(), schedule, model)


def check(path, data_set=None, model=None, what='checkpoint'):
  """Raises WrongDataSetError or WrongModelError, naming both, when
  checkpoint path was trained on another data set than `data_set`, or
  with another model module than `model` (None: not checked; a checkpoint
  that cannot be read is left to the restore that follows)."""
  try:
    record = read(path)
  except Exception:  # unreadable: the restore names the problem
    return
  if data_set and record.data_set != data_set:
    raise WrongDataSetError(
        '%s %s was trained on --dataset %s, not on --dataset %s: pass '
        '--dataset %s' % (what, path, record.data_set, data_set,
                          record.data_set))
  if model and record.model != model:
    raise WrongModelError(
        '%s %s holds the model --model %s, not --model %s: pass --model %s'
        % (what, path, record.model, model, record.model))


def check_newest(candidates, data_set, model=None):
  """check() of the newest of a folder's checkpoints, as
  checkpoints.checkpoint_candidates lists them (nothing when there is
  none): a run given the wrong --dataset or --model is told so before its
  data set is fetched."""
  if candidates:
    check(candidates[0][1], data_set, model)


def schedule_notes(path, schedule):
  """Lines noting each schedule value that differs from the one checkpoint
  path recorded (a resume takes the new value from its step on)."""
  try:
    before = read(path).schedule
  except Exception:
    return []
  said = {'train_size': 'on %g training examples; it goes on with %g (the '
                        'epochs of the decay follow)'}
  return ['Note: %s was trained %s' % (path, said.get(
      k, 'with --' + k + ' %g; it goes on with %g') % (before[k], v))
          for k, v in schedule.items()
          if k in before and before[k] != float(v)]
