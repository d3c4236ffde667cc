"""The fully connected model's runs: what run_fc_model.py and
restore_model.py share.

  config = resolve(FLAGS, get)              the run's values, resolved once
  data = load(data_dir, data_source, data_set, data_helpers)   either
                                            official format; fetched
  run_dir = make_run_dir(train_dir)         a time-stamped folder per run
  test_accuracy(two_layer_fc, model, data)  on the whole test set
  checkpoints_newest_first(train_dir)       of every run folder, for restore
  choose(train_dir, choice)                 the one --checkpoint names
  check_fits(path, hidden1)                 a checkpoint of the right width
"""

import dataclasses
import os
import time

import tensorflow as tf

from cifar10_toolkit import checkpoints
from cifar10_toolkit import config
from cifar10_toolkit import dataset
from cifar10_toolkit import errors
from cifar10_toolkit import run_control
from cifar10_toolkit import selection


@dataclasses.dataclass(frozen=True)
class FCConfig:
  """run_fc_model.py's flags as the run uses them: the seed drawn when
  --seed is not given, the data source that would be fetched from."""
  batch_size: int
  data_dir: str
  data_source: str
  dataset: str
  hidden1: int
  learning_rate: float
  max_steps: int
  profile_steps: tuple
  reg_constant: float
  seed: int
  train_dir: str

  def hparams(self):
    """What shapes the result, for HParams, most telling first."""
    return config.hparams_values(
        (name, getattr(self, name)) for name in (
            'seed', 'hidden1', 'learning_rate', 'batch_size', 'reg_constant',
            'max_steps', 'dataset'))


def resolve(flag_values, get):
  """The FCConfig of parsed run_fc_model.py flags; get(name) is the
  DataSet of --dataset (data_sets.get)."""
  values = {f.name: flag_values[f.name].value
            for f in dataclasses.fields(FCConfig)}
  values.update(data_source=dataset.resolve_source(get(values['dataset']),
                                                   values['data_source']),
                seed=config.draw_seed() if values['seed'] is None
                else values['seed'])
  return FCConfig(**values)


def load(data_dir, data_source, data_set, data_helpers):
  """The data set as data_helpers.load_data returns it (data_helpers: the
  NumPy input library, data_helpers.py); fetched (from data_source, else
  the data set's variable, else the official URL) if data_dir has none."""
  try:
    data_helpers.find_format(data_dir, data_set)
  except errors.DataSetError:
    run_control.fetch_data_set(data_dir, data_source, data_set)
  return data_helpers.load_data(data_dir, data_set)


def test_accuracy(model_lib, model, data):
  """Accuracy of model (model_lib's: two_layer_fc) on the whole test set
  (float)."""
  logits = model_lib.inference(model, tf.constant(data['images_test']))
  return float(model_lib.evaluation(logits, data['labels_test']))


def make_run_dir(train_dir):
  """train_dir/<YYYYmmdd-HHMMSS>[-N]/, new for each run."""
  base = os.path.join(train_dir, time.strftime('%Y%m%d-%H%M%S'))
  path, n = base, 1
  while os.path.exists(path):
    path, n = '%s-%d' % (base, n), n + 1
  os.makedirs(path)
  return path


def checkpoints_newest_first(train_dir):
  """Every checkpoint of the run folders under train_dir, newest first.

  The files on disk count, not only what each folder's index file lists: a
  damaged index is named in one line and the folder's files are used.
  """
  found = []
  if os.path.isdir(train_dir):
    for run in sorted(os.listdir(train_dir)):
      run_dir = os.path.join(train_dir, run)
      if not os.path.isdir(run_dir):
        continue
      candidates, problem = checkpoints.checkpoint_candidates(run_dir)
      if problem:
        print('Note: %s; using the checkpoint files in the folder' % problem)
      found += [(os.path.getmtime(path + '.index'), path)
                for _, path in candidates if os.path.exists(path + '.index')]
  return [path for _, path in sorted(found, reverse=True)]


def choose(train_dir, choice):
  """The checkpoint restore_model.py --checkpoint names, or None (choice
  None: the newest). A step number is looked for in the run folders newest
  first; 'best' is the best kept in any run folder (selection.keep_if_best:
  the highest test accuracy).

  Raises:
    errors.UsageError: no such checkpoint; one line naming the flag.
  """
  if choice is None or not (choice == 'best' or choice.isdigit()):
    return selection.choose(train_dir, choice)
  runs = [os.path.join(train_dir, r) for r in sorted(os.listdir(train_dir))
          ] if os.path.isdir(train_dir) else []
  if choice == 'best':
    kept = [(r['examples'], r['precision'], os.path.join(
        run, selection.BEST_DIR, r['checkpoint'])) for run, r in (
            (run, selection.best_record(run)) for run in runs) if r]
    if not kept:
      raise errors.UsageError(
          '--checkpoint best: no run folder under %s holds a best checkpoint '
          '(run_fc_model.py and restore_model.py keep one in <run>/%s as '
          'they test)' % (train_dir, selection.BEST_DIR))
    return max(kept)[2]
  name = '%s-%d' % (checkpoints.CHECKPOINT_PREFIX, int(choice))
  paths = checkpoints_newest_first(train_dir)
  for path in paths:
    if os.path.basename(path) == name:
      return path
  raise errors.UsageError('--checkpoint %s: no run folder under %s holds %s '
                          '(%s)' % (choice, train_dir, name, 'the newest: %s'
                                    % paths[0] if paths else 'none holds a '
                                    'checkpoint'))


def newest_checkpoint(train_dir):
  """The newest checkpoint of any run folder under train_dir, or None."""
  paths = checkpoints_newest_first(train_dir)
  return paths[0] if paths else None


def check_fits(path, hidden1):
  """A clear error when the checkpoint was trained with another hidden1."""
  shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  key = [k for k in shapes if k.startswith('model/params/layer1.Sweights/')]
  if key and shapes[key[0]][1] != hidden1:
    raise errors.UsageError(
        'checkpoint %s has %d hidden units, not --hidden1 %d; pass --hidden1 '
        '%d' % (path, shapes[key[0]][1], hidden1, shapes[key[0]][1]))
