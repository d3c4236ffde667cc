"""Restores the newest fully connected checkpoint and reports its test accuracy.

    python3 restore_model.py [--train_dir tf_logs] [--hidden1 120]

Looks through the time-stamped run folders that run_fc_model.py writes under
train_dir, restores the newest checkpoint that reads (naming any damaged one
it walks back past), and prints `Current step: N` (the global step it was
saved at) and `Test accuracy A`, which equals what run_fc_model.py printed
for that checkpoint.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import cli
if __name__ == '__main__':
  cli.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys


def build_parser():
  p = cli.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--train_dir', default='tf_logs',
                 help='the folder run_fc_model.py logged into (default '
                 '%(default)s)')
  p.add_argument('--hidden1', type=cli.positive_int, default=120,
                 help='units in the hidden layer of the saved model (default '
                 '%(default)s)')
  cli.add_data_flags(p)
  return p


if __name__ == '__main__':
  cli.parse_early(build_parser)  # -h and flag errors, before TensorFlow loads

import tensorflow as tf
import errors
import run_fc_model
import checkpoints
import run_control
import two_layer_fc


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


def main(argv=None):
  args = build_parser().parse_args(argv)
  paths = checkpoints_newest_first(args.train_dir)
  if not paths:
    raise errors.UsageError('no checkpoint under %s (run run_fc_model.py '
                               'first)' % args.train_dir)
  model = two_layer_fc.TwoLayerFC(args.hidden1)
  state = two_layer_fc.TrainState()
  reasons = []
  for path in paths:  # walk back past damaged checkpoints, naming each
    problem = checkpoints.checkpoint_problem(path)
    if problem is None:
      check_fits(path, args.hidden1)
      checkpoints.restore(tf.train.Checkpoint(model=model, state=state), path)
      break
    print('Skipping checkpoint %s: %s' % (path, problem))
    reasons.append('%s: %s' % (path, problem))
  else:
    raise errors.UsageError('no checkpoint under %s can be read (%s)' % (
        args.train_dir, '; '.join(reasons)))
  data = run_fc_model.load(args)
  print('Restored %s' % path)
  print('Current step: %d' % int(state.global_step))
  print('Test accuracy {:g}'.format(run_fc_model.test_accuracy(model, data)))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
