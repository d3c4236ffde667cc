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

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys

from absl import flags

from cifar10_toolkit import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string('eval_dir', '/tmp/cifar10_eval', 'where event logs are '
                    'written', flag_values=FLAGS)
flags.DEFINE_enum('eval_data', 'test', ['test', 'train_eval'], "'test' or "
                  "'train_eval' (the training images, uncropped by "
                  'distortions)', flag_values=FLAGS)
flags.DEFINE_string('checkpoint_dir', '/tmp/cifar10_train', 'where '
                    'cifar10_train.py writes checkpoints', flag_values=FLAGS)
flags.DEFINE_float('eval_interval_secs', 300, 'how often to look for a new '
                   'checkpoint', flag_values=FLAGS)
cli.positive('eval_interval_secs', FLAGS)
flags.DEFINE_integer('num_examples', 10000, 'number of examples to run',
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_boolean('run_once', False, 'evaluate the newest checkpoint once '
                     'and exit', flag_values=FLAGS)
cli.define_data_flags(FLAGS)
flags.DEFINE_boolean('raw_weights', False, 'evaluate the raw weights, not '
                     'their moving averages', flag_values=FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads

from cifar10_toolkit import checkpoints  # noqa: E402  (TensorFlow loads here)
from cifar10_toolkit import console  # noqa: E402
from cifar10_toolkit import dataset  # noqa: E402
from cifar10_toolkit import errors  # noqa: E402
from cifar10_toolkit import evaluation  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import run_folder  # noqa: E402
from cifar10_toolkit import summaries  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  run_folder.prepare_dir(FLAGS.eval_dir, '--eval_dir')
  dataset.maybe_download_and_extract(FLAGS.data_dir, FLAGS.data_source)
  evaluator = evaluation.Evaluator(FLAGS.data_dir, FLAGS.eval_data,
                                   FLAGS.num_examples, FLAGS.raw_weights)
  writer = summaries.summary_writer(FLAGS.eval_dir, '--eval_dir')
  done = None
  reported = {}  # damaged checkpoints already named, while they stay so
  joined = None  # the trial id of the training run whose HParams row we join
  waiting_said = False
  with run_control.GracefulStop('stopping') as stop:
    while not stop.requested:
      try:
        path, step = evaluation.newest_readable(
            evaluator, FLAGS.checkpoint_dir, done, reported)
      except checkpoints.WrongModelError:
        raise
      except errors.UsageError as e:
        if FLAGS.run_once:
          raise
        print('%s; waiting for a readable one' % e, flush=True)
        path = None
      if path is None and done is None and FLAGS.run_once:
        raise errors.UsageError('no checkpoint in %s' % FLAGS.checkpoint_dir)
      if path is not None:
        stop.action = 'finishing the evaluation in hand'
        joined = evaluation.join_training_row(FLAGS.checkpoint_dir, writer,
                                              joined)
        evaluation.report(*evaluator.evaluate(), step, path, writer)
        stop.action = 'stopping'
        done = path
        waiting_said = False
      if FLAGS.run_once:
        return 0
      if not waiting_said:
        print('%s: waiting for a new checkpoint in %s (looking every %g s)' % (
            console.now(), FLAGS.checkpoint_dir, FLAGS.eval_interval_secs),
              flush=True)
        waiting_said = True
      stop.sleep(FLAGS.eval_interval_secs)
  print('%s: stopped' % console.now())
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
