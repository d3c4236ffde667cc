"""Evaluating convnet checkpoints: what cifar10_eval.py runs and reports.

  evaluator = Evaluator(data_dir, eval_data, num_examples, data_set,
                        model_lib, input_lib)
  path, step, content = newest_readable(evaluator, checkpoint_dir, done,
                                       reported)
  precision, confusion, seen = evaluator.evaluate()
  report(precision, confusion, seen, step, path, writer, content, names,
         kind(eval_data, num_examples, raw_weights))     the console's
      lines, 'Precision @ 1', the confusion matrix as an image and a table,
      the checkpoint's path, content_id and what was evaluated
  join_training_row(checkpoint_dir, writer, joined)        the training run's
      HParams row
  evaluated_steps(eval_dir)        the steps, checkpoints, precisions and
                                   kinds of evaluation eval_dir holds
  content_id(path)                 what tells a checkpoint's weights apart
"""

import glob
import hashlib
import os
import re
import sys

import numpy as np
import tensorflow as tf

from cifar10_toolkit import checkpoints
from cifar10_toolkit import config
from cifar10_toolkit import console
from cifar10_toolkit import interface
from cifar10_toolkit import plugins
from cifar10_toolkit import summaries

EVAL_BATCH_SIZE = 500
PRECISION_TAG = 'Precision @ 1'
CHECKPOINT_TAG = 'checkpoint'
MAX_INDEX_BYTES = 1 << 24  # read of a checkpoint's .index, at most
MAX_COUNTED = 20  # the confusion image writes counts up to this many classes


class Evaluator:
  """Restores checkpoints into one model and counts top-1 hits."""

  def __init__(self, data_dir, eval_data, num_examples, data_set,
               model_lib, input_lib, raw_weights=False, batches=None):
    """data_set: the dataset.DataSet the checkpoints must have been
    trained on; model_lib, input_lib: the model library (convnet) and the
    input library (cifar10_input: its inputs); batches: batches to use
    instead of data_dir's (tools/gpu_audit.py)."""
    self.data_set, self.model_lib = data_set, model_lib
    input_lib = interface.input_for(model_lib, input_lib)
    self.model = config.new_model(model_lib, input_lib, data_set)
    self.state = model_lib.TrainState(self.model)
    self.ckpt = tf.train.Checkpoint(model=self.model, state=self.state)
    self.dataset = batches or input_lib.inputs(
        eval_data == 'test', data_dir, EVAL_BATCH_SIZE, data_set=data_set)
    self.num_examples = num_examples
    self.raw_weights = raw_weights

  @tf.function(autograph=False)
  def predict(self, images):
    """Top-1 classes (int32 [batch]) of float32 crops [batch, 24, 24, 3]."""
    logits, _ = self.model_lib.inference(self.model, images)
    return tf.argmax(logits, axis=1, output_type=tf.int32)

  def restore(self, path, what='checkpoint'):
    """Loads a checkpoint; moving averages into the model unless raw_weights
    (what: the checkpoint's name in an error).

    Returns:
      The checkpoint's global step.
    """
    checkpoints.restore(self.ckpt, path, what, data_set=self.data_set.name,
                        model=plugins.name_of(self.model_lib))
    return self.after_restore()

  def after_restore(self):
    """Moving averages into the model (unless raw_weights); the step."""
    if not self.raw_weights:
      self.model_lib.use_moving_averages(self.model, self.state)
    return int(self.state.global_step)

  def evaluate(self):
    """Runs num_examples examples (at most the set's size) once each.

    Returns:
      (precision @ 1, confusion matrix int [classes, classes]: rows true,
      columns predicted, examples counted).
    """
    n = self.data_set.num_classes
    confusion = np.zeros((n, n), np.int64)
    seen = 0
    for images, labels in self.dataset:
      take = min(self.num_examples - seen, int(labels.shape[0]))
      predictions = self.predict(images[:take]).numpy()
      np.add.at(confusion, (labels.numpy()[:take], predictions), 1)
      seen += take
      if seen >= self.num_examples:
        break
    return np.trace(confusion) / max(seen, 1), confusion, seen


def kind(eval_data, num_examples, raw_weights):
  """What an evaluation measures, in the flags' words (written with each
  result, so that a folder's curve stays one kind): 'eval_data test,
  num_examples 10000, moving averages'."""
  return 'eval_data %s, num_examples %d, %s' % (
      eval_data, num_examples,
      'raw weights' if raw_weights else 'moving averages')


def confusion_image(confusion, step, precision, names):
  """The confusion matrix as a labelled picture (matplotlib, loaded here only).

  Made to be read at the size TensorBoard's cards show it: the Time Series
  card scales an image to 215 pixels high, the Images card shows it
  as it is (up to about 350 wide). Rows are the true classes, columns the
  predicted ones, both named; each cell shows its share of the row's
  examples in whole percent (up to MAX_COUNTED classes; beyond, the shading
  alone) and is shaded by it; the title gives the step and the precision.
  The counts are in the Text tab's table (confusion_markdown). The picture
  grows with the classes, so that 100 names stay legible.

  Returns:
    uint8 [1, height, width, 4] (RGBA), for tf.summary.image.
  """
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import figure as mfigure
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  n = len(names)
  inches = max(1.0, n / 10.0) ** 0.4  # 2.5 x 2.15 in for 10; 2.5x for 100
  fig = mfigure.Figure(figsize=(2.5 * inches, 2.15 * inches), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ax.imshow(rows, cmap='Blues', vmin=0, vmax=1, aspect='auto')
  ticks = {'fontsize': 7 if n <= MAX_COUNTED else 5}
  ax.set_xticks(range(n), names, rotation=60 if n <= MAX_COUNTED else 90,
                ha='right' if n <= MAX_COUNTED else 'center',
                rotation_mode='anchor' if n <= MAX_COUNTED else 'default',
                **ticks)
  ax.set_yticks(range(n), names, **ticks)
  ax.tick_params(length=0, pad=2)
  fig.suptitle('step %d: precision @ 1 = %.3f\n%% of each true class (row) '
               'predicted as' % (step, precision), fontsize=6.5)
  for i in range(n if n <= MAX_COUNTED else 0):
    for j in range(n):
      ax.text(j, i, '%d' % round(100 * rows[i, j]), ha='center',
              va='center', fontsize=6,
              color='white' if rows[i, j] > 0.5 else 'black')
  fig.tight_layout(pad=0.2)
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[None]


def confusion_markdown(confusion, names):
  """The confusion matrix as a Markdown table (TensorBoard's Text tab)."""
  lines = ['| true \\ predicted | ' + ' | '.join(names) + ' | recall |',
           '|---' * (len(names) + 2) + '|']
  for i, name in enumerate(names):
    total = max(confusion[i].sum(), 1)
    lines.append('| **%s** | %s | %.3f |' % (
        name, ' | '.join(str(c) for c in confusion[i]),
        confusion[i, i] / total))
  return '\n'.join(lines)


def content_id(path):
  """What tells a checkpoint's weights apart, whatever its path (a new run
  writes ckpt-40 again): the md5 of its .index file, which holds each
  tensor's checksum; 16 hex digits, or None when it cannot be read."""
  try:
    with open(path + '.index', 'rb') as f:
      return hashlib.md5(f.read(MAX_INDEX_BYTES)).hexdigest()[:16]
  except OSError:
    return None


def report(precision, confusion, seen, step, path, writer, content, names,
           what):
  """Prints the tutorial's line and per-class figures; writes summaries
  (with the checkpoint's path, content_id and what: the evaluation's kind,
  for evaluated_steps)."""
  print('%s: precision @ 1 = %.3f' % (console.now(), precision), flush=True)
  hits = np.diag(confusion)
  predicted = confusion.sum(axis=0)
  actual = confusion.sum(axis=1)
  print('  checkpoint %s (step %d), %d examples' % (path, step, seen))
  print('  %-12s %9s %9s' % ('class', 'precision', 'recall'))
  for i, name in enumerate(names):
    print('  %-12s %9.3f %9.3f' % (name, hits[i] / max(predicted[i], 1),
                                   hits[i] / max(actual[i], 1)))
  sys.stdout.flush()
  with writer.as_default():
    tf.summary.scalar(PRECISION_TAG, precision, step=step)
    tf.summary.image(
        'confusion_matrix', confusion_image(confusion, step, precision,
                                            names),
        step=step, description='rows: true class, columns: predicted class; '
        "each cell the share of the row's examples, in percent (the counts: "
        'the confusion_matrix_table text)')
    tf.summary.text(CHECKPOINT_TAG, '%s (weights %s; %s)' % (
        path, content, what), step=step, description='the checkpoint '
        'evaluated, the md5 of its index (what tells its weights apart) and '
        'what was evaluated')
    tf.summary.text('confusion_matrix_table', confusion_markdown(confusion,
                                                                 names),
                    step=step, description='rows: true class, columns: '
                    'predicted class')
  writer.flush()


def newest_readable(evaluator, checkpoint_dir, done, reported):
  """Restores the newest checkpoint that reads and is not yet evaluated.

  Walks back past damaged checkpoints, naming each once (reported), and
  changes nothing in checkpoint_dir: repairs are the trainer's.

  Args:
    done: (path, content_id) of the checkpoint last evaluated, or None.

  Returns:
    (path, step, content_id(path)), or (None, None, None) when there is
    nothing new to evaluate.
  """
  path = checkpoints.resume(evaluator.ckpt, checkpoint_dir, skip=reported,
                            data_set=evaluator.data_set.name,
                            model=plugins.name_of(evaluator.model_lib))
  content = path and content_id(path)
  if path is None or (path, content) == done:
    return None, None, None
  return path, evaluator.after_restore(), content


def join_training_row(checkpoint_dir, writer, joined):
  """Writes the training run's HParams into the evaluation's run.

  The same values and trial id as the run that wrote checkpoint_dir
  (summaries.save_run_hparams), so that TensorBoard's HParams tab shows the
  precision in that run's row, whatever folders the two write to. Writes
  again only when the run changed (joined: the trial id last written).

  Returns:
    The trial id written, or `joined`.
  """
  trial_id, values = summaries.load_run_hparams(checkpoint_dir)
  if trial_id is None or trial_id == joined:
    return joined
  with writer.as_default():
    summaries.write_hparams(values, summaries.CONVNET_METRICS, trial_id)
  return trial_id


def evaluated_steps(eval_dir):
  """The global steps whose precision the event files of eval_dir hold (its
  own files, not a sub-folder's), so that no checkpoint is written twice.

  A file cut short (a writer killed mid-record) counts up to the cut.

  Returns:
    ({step: {content_id: precision @ 1}}, a step's evaluations in the order
    written (content_id None: not recorded, in files of older versions);
    the set of kinds written (kind(...); files of older versions wrote
    none)).
  """
  from tensorboard.compat.proto import event_pb2  # (loaded here only)
  found = {}  # step -> ([precisions], [content ids]), in the order written
  kinds = set()
  for path in sorted(glob.glob(os.path.join(eval_dir, 'events.out.tfevents.*'))):
    if not os.path.isfile(path) or os.path.islink(path):
      continue
    try:
      for record in tf.data.TFRecordDataset(path):
        event = event_pb2.Event.FromString(record.numpy())
        for v in event.summary.value:
          if v.tag == PRECISION_TAG:
            found.setdefault(int(event.step), ([], []))[0].append(
                float(tf.make_ndarray(v.tensor)))
          elif v.tag == CHECKPOINT_TAG and v.tensor.string_val:
            m = re.search(rb'\(weights (\w+)(?:; ([^()]*))?\)$',
                          v.tensor.string_val[0])
            found.setdefault(int(event.step), ([], []))[1].append(
                m.group(1).decode() if m else None)
            kinds.update([m.group(2).decode()] if m and m.group(2) else [])
    except tf.errors.OpError:  # a truncated or unreadable tail
      continue
  steps = {}
  for step, (precisions, contents) in found.items():
    contents += [None] * (len(precisions) - len(contents))
    steps[step] = dict(zip(contents, precisions))
  return steps, kinds
