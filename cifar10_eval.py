"""Evaluates CIFAR-10 convnet checkpoints with the moving-average weights.

    python3 cifar10_eval.py --run_once
    python3 cifar10_eval.py            # evaluate each new checkpoint as it appears

Prints `<datetime>: precision @ 1 = 0.NNN` and per-class precision and
recall; writes 'Precision @ 1', a confusion-matrix image and the same matrix
as a Markdown table to eval_dir at the checkpoint's global step, for
TensorBoard, with the training run's HParams so that its row shows the
precision. --raw_weights evaluates the trained weights instead of their
moving averages (the tutorial's exercise).
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import console
import cli
if __name__ == '__main__':
  cli.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys


EVAL_BATCH_SIZE = 500


def build_parser():
  """The tutorial's evaluation flags and defaults, plus the toolkit's own."""
  p = cli.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--eval_dir', default='/tmp/cifar10_eval',
                 help='where event logs are written (default %(default)s)')
  p.add_argument('--eval_data', default='test', choices=['test', 'train_eval'],
                 help="'test' or 'train_eval' (the training images, "
                 "uncropped by distortions) (default %(default)s)")
  p.add_argument('--checkpoint_dir', default='/tmp/cifar10_train',
                 help='where cifar10_train.py writes checkpoints (default '
                 '%(default)s)')
  p.add_argument('--eval_interval_secs', type=cli.positive_float,
                 default=300, help='how often to look for a new checkpoint '
                 '(default %(default)s)')
  p.add_argument('--num_examples', type=cli.positive_int, default=10000,
                 help='number of examples to run (default %(default)s)')
  cli.add_bool(p, 'run_once', False, 'evaluate the newest checkpoint '
                     'once and exit')
  cli.add_data_flags(p)
  cli.add_bool(p, 'raw_weights', False, 'evaluate the raw weights, not '
                     'their moving averages')
  return p


if __name__ == '__main__':
  cli.parse_early(build_parser)  # -h and flag errors, before TensorFlow loads

import numpy as np
import tensorflow as tf
import cifar10_data
import cifar10_input
import convnet
import convnet_training
import checkpoints
import errors
import run_control
import run_folder
import summaries


class Evaluator:
  """Restores checkpoints into one model and counts top-1 hits."""

  def __init__(self, data_dir, eval_data, num_examples, raw_weights=False,
               dataset=None):
    """dataset: batches to use instead of data_dir's (gpu_audit.py)."""
    self.model = convnet.ConvNet()
    self.state = convnet_training.TrainState(self.model)
    self.ckpt = tf.train.Checkpoint(model=self.model, state=self.state)
    self.dataset = dataset or cifar10_input.inputs(
        eval_data == 'test', data_dir, EVAL_BATCH_SIZE)
    self.num_examples = num_examples
    self.raw_weights = raw_weights

  @tf.function
  def _predict(self, images):
    logits, _ = convnet.inference(self.model, images)
    return tf.argmax(logits, axis=1, output_type=tf.int32)

  def restore(self, path):
    """Loads a checkpoint; moving averages into the model unless raw_weights.

    Returns:
      The checkpoint's global step.
    """
    checkpoints.restore(self.ckpt, path)
    return self.after_restore()

  def after_restore(self):
    """Moving averages into the model (unless raw_weights); the step."""
    if not self.raw_weights:
      convnet.use_moving_averages(self.model, self.state)
    return int(self.state.global_step)

  def evaluate(self):
    """Runs num_examples examples (at most the set's size) once each.

    Returns:
      (precision @ 1, confusion matrix int [10, 10]: rows true, columns
      predicted, examples counted).
    """
    confusion = np.zeros((convnet.NUM_CLASSES, convnet.NUM_CLASSES), np.int64)
    seen = 0
    for images, labels in self.dataset:
      take = min(self.num_examples - seen, int(labels.shape[0]))
      predictions = self._predict(images[:take]).numpy()
      np.add.at(confusion, (labels.numpy()[:take], predictions), 1)
      seen += take
      if seen >= self.num_examples:
        break
    return np.trace(confusion) / max(seen, 1), confusion, seen


def confusion_image(confusion, step, precision):
  """The confusion matrix as a labelled picture (matplotlib, loaded here only).

  Rows are the true classes, columns the predicted ones, both named; each cell
  shows its count, shaded by its share of the row (the colour bar gives the
  scale); the title gives the step and the precision.

  Returns:
    uint8 [1, height, width, 4] (RGBA), for tf.summary.image.
  """
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import figure as mfigure
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  names = cifar10_data.CLASS_NAMES
  rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  fig = mfigure.Figure(figsize=(7.2, 6.2), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  shown = ax.imshow(rows, cmap='Blues', vmin=0, vmax=1)
  ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title('Confusion matrix at step %d: precision @ 1 = %.3f (%d '
               'examples)' % (step, precision, confusion.sum()), fontsize=10)
  for i in range(len(names)):
    for j in range(len(names)):
      ax.text(j, i, str(confusion[i, j]), ha='center', va='center',
              fontsize=7, color='white' if rows[i, j] > 0.5 else 'black')
  fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04,
               label="share of the row's examples")
  fig.tight_layout()
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[None]


def confusion_markdown(confusion):
  """The confusion matrix as a Markdown table (TensorBoard's Text tab)."""
  names = cifar10_data.CLASS_NAMES
  lines = ['| true \\ predicted | ' + ' | '.join(names) + ' | recall |',
           '|---' * (len(names) + 2) + '|']
  for i, name in enumerate(names):
    total = max(confusion[i].sum(), 1)
    lines.append('| **%s** | %s | %.3f |' % (
        name, ' | '.join(str(c) for c in confusion[i]),
        confusion[i, i] / total))
  return '\n'.join(lines)


def report(precision, confusion, seen, step, path, writer):
  """Prints the tutorial's line and per-class figures; writes summaries."""
  print('%s: precision @ 1 = %.3f' % (console.now(), precision), flush=True)
  hits = np.diag(confusion)
  predicted = confusion.sum(axis=0)
  actual = confusion.sum(axis=1)
  print('  checkpoint %s (step %d), %d examples' % (path, step, seen))
  print('  %-12s %9s %9s' % ('class', 'precision', 'recall'))
  for i, name in enumerate(cifar10_data.CLASS_NAMES):
    print('  %-12s %9.3f %9.3f' % (name, hits[i] / max(predicted[i], 1),
                                   hits[i] / max(actual[i], 1)))
  sys.stdout.flush()
  with writer.as_default():
    tf.summary.scalar('Precision @ 1', precision, step=step)
    tf.summary.image(
        'confusion_matrix', confusion_image(confusion, step, precision),
        step=step, description='rows: true class, columns: predicted class; '
        'each cell its count, shaded by its share of the row')
    tf.summary.text('confusion_matrix_table', confusion_markdown(confusion),
                    step=step, description='rows: true class, columns: '
                    'predicted class')
  writer.flush()


def newest_readable(evaluator, checkpoint_dir, done, reported):
  """Restores the newest checkpoint that reads and is not yet evaluated.

  Walks back past damaged checkpoints, naming each once (reported), and
  changes nothing in checkpoint_dir: repairs are the trainer's.

  Returns:
    (path, step), or (None, None) when there is nothing new to evaluate.
  """
  path = checkpoints.resume(evaluator.ckpt, checkpoint_dir, skip=reported)
  if path is None or path == done:
    return None, None
  return path, evaluator.after_restore()


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
    summaries.write_hparams(values, cli.HPARAMS_METRICS, trial_id)
  return trial_id


def main(argv=None):
  args = build_parser().parse_args(argv)
  run_folder.prepare_dir(args.eval_dir, '--eval_dir')
  cifar10_data.maybe_download_and_extract(args.data_dir, args.data_source)
  evaluator = Evaluator(args.data_dir, args.eval_data, args.num_examples,
                        args.raw_weights)
  writer = summaries.summary_writer(args.eval_dir, '--eval_dir')
  done = None
  reported = {}  # damaged checkpoints already named, while they stay so
  joined = None  # the trial id of the training run whose HParams row we join
  waiting_said = False
  with run_control.GracefulStop('stopping') as stop:
    while not stop.requested:
      try:
        path, step = newest_readable(evaluator, args.checkpoint_dir, done,
                                     reported)
      except checkpoints.WrongModelError:
        raise
      except errors.UsageError as e:
        if args.run_once:
          raise
        print('%s; waiting for a readable one' % e, flush=True)
        path = None
      if path is None and done is None and args.run_once:
        raise errors.UsageError('no checkpoint in %s' % args.checkpoint_dir)
      if path is not None:
        stop.action = 'finishing the evaluation in hand'
        joined = join_training_row(args.checkpoint_dir, writer, joined)
        report(*evaluator.evaluate(), step, path, writer)
        stop.action = 'stopping'
        done = path
        waiting_said = False
      if args.run_once:
        return 0
      if not waiting_said:
        print('%s: waiting for a new checkpoint in %s (looking every %g s)' % (
            console.now(), args.checkpoint_dir, args.eval_interval_secs),
              flush=True)
        waiting_said = True
      stop.sleep(args.eval_interval_secs)
  print('%s: stopped' % console.now())
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
