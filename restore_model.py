"""Restores the newest fully connected checkpoint and reports its test accuracy.

    python3 restore_model.py [--train_dir tf_logs] [--hidden1 120] [--checkpoint best]

Looks through the time-stamped run folders that run_fc_model.py writes under
train_dir, restores the newest checkpoint that reads (naming any damaged one
it walks back past), and prints `Current step: N` (the global step it was
saved at) and `Test accuracy A`, which equals what run_fc_model.py printed
for that checkpoint. --checkpoint tests another: a step, a path, or 'best'.
The best tested checkpoint of each run folder is kept in <run>/best/
(run_fc_model.py keeps its last one there).
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys

from absl import flags

import data_sets
from cifar10_toolkit import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string('train_dir', 'tf_logs', 'the folder run_fc_model.py '
                    'logged into', flag_values=FLAGS)
flags.DEFINE_integer('hidden1', 120, 'units in the hidden layer of the saved '
                     'model', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string('checkpoint', None, "the checkpoint to test: a step "
                    "number (the newest run folder's ckpt-N that has it), a "
                    "checkpoint's path, or 'best' (the best one kept under "
                    'train_dir); default: the newest', flag_values=FLAGS)
cli.define_data_flags(FLAGS, (data_sets.NAMES, data_sets.get))

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads

import tensorflow as tf  # noqa: E402  (TensorFlow loads here)
import data_helpers  # noqa: E402
import two_layer_fc  # noqa: E402
from cifar10_toolkit import checkpoints  # noqa: E402
from cifar10_toolkit import errors  # noqa: E402
from cifar10_toolkit import fc_runs  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import selection  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  chosen = fc_runs.choose(FLAGS.train_dir, FLAGS.checkpoint)
  paths = [chosen] if chosen else fc_runs.checkpoints_newest_first(
      FLAGS.train_dir)
  if not paths:
    raise errors.UsageError('no checkpoint under %s (run run_fc_model.py '
                               'first)' % FLAGS.train_dir)
  data_set = data_sets.get(FLAGS.dataset)
  model = two_layer_fc.TwoLayerFC(FLAGS.hidden1, data_set.image_bytes,
                                  data_set.num_classes)
  state = two_layer_fc.TrainState()
  what = '--checkpoint' if chosen else 'checkpoint'
  reasons = []
  for path in paths:  # walk back past damaged checkpoints, naming each
    problem = checkpoints.checkpoint_problem(path)
    if problem is None:
      fc_runs.check_fits(path, FLAGS.hidden1)
      checkpoints.restore(tf.train.Checkpoint(model=model, state=state), path,
                          what, data_set=data_set.name)
      break
    if chosen:
      raise errors.UsageError('--checkpoint %s cannot be read (%s)' % (
          path, problem))
    print('Skipping checkpoint %s: %s' % (path, problem))
    reasons.append('%s: %s' % (path, problem))
  else:
    raise errors.UsageError('no checkpoint under %s can be read (%s)' % (
        FLAGS.train_dir, '; '.join(reasons)))
  data = fc_runs.load(FLAGS.data_dir, FLAGS.data_source, data_set,
                      data_helpers)
  accuracy = fc_runs.test_accuracy(two_layer_fc, model, data)
  print('Restored %s' % path)
  print('Current step: %d' % int(state.global_step))
  print('Test accuracy {:g}'.format(accuracy))
  selection.keep_and_say(None, path, int(state.global_step), accuracy,
                         len(data['labels_test']))  # (its run's best)
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
