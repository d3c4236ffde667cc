"""Trains, checkpoints and tests the two-layer fully connected network.

    python3 run_fc_model.py --data_source /path/to/cifar-10-binary.tar.gz

Prints the parameters (data_source: the source that would be fetched from);
every 100 steps `Step N, training accuracy A`; saves a checkpoint every 1000
steps and at the end (`Saved checkpoint <path>`); then `Test accuracy A` and
`Total time: Ts`. Each run logs into its own time-stamped folder under
train_dir (event files for TensorBoard: loss, accuracy, logits histogram, the
test accuracy, the graph, the flags for the HParams dashboard; and the
checkpoints), which restore_model.py reads.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import cli
if __name__ == '__main__':
  cli.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys
import time


SUMMARY_STEPS = 100      # print and write summaries every this many steps
CHECKPOINT_STEPS = 1000  # save a checkpoint every this many steps
MAX_HIDDEN1 = 65536      # 3072 x 65536 float32 weights: 805 MB
# The scalars the HParams dashboard shows beside each run's flags.
HPARAMS_METRICS = [('test_accuracy', '', 'test accuracy'),
                   ('train_accuracy', '', 'training accuracy'),
                   ('loss', '', 'training loss')]


def build_parser():
  """The blog's flags and defaults, plus data_dir, data_source and seed."""
  p = cli.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--learning_rate', type=cli.positive_float,
                 default=0.001, help='learning rate (default %(default)s)')
  p.add_argument('--max_steps', type=cli.positive_int, default=2000,
                 help='number of training steps (default %(default)s)')
  p.add_argument('--hidden1', type=cli.bounded_int(1, MAX_HIDDEN1),
                 default=120,
                 help='units in the hidden layer (default %(default)s)')
  p.add_argument('--batch_size', type=cli.positive_int, default=400,
                 help='images per batch (default %(default)s)')
  p.add_argument('--train_dir', default='tf_logs',
                 help='each run logs into a time-stamped folder under it '
                 '(default %(default)s)')
  p.add_argument('--reg_constant', type=cli.non_negative_float,
                 default=0.1, help='regularization constant (default '
                 '%(default)s)')
  cli.add_data_flags(p, 'folder holding cifar-10-batches-py or '
                           'cifar-10-batches-bin, or where the binary '
                           'version is fetched to')
  p.add_argument('--seed', type=cli.seed_int, default=None,
                 help='seed of the initial weights and batch order (default: '
                 'random)')
  cli.add_profile_flag(p)
  return p


if __name__ == '__main__':
  cli.parse_early(build_parser)  # -h and flag errors, before TensorFlow loads

import tensorflow as tf
import cifar10_data
import data_helpers
import checkpoints
import errors
import run_control
import run_folder
import summaries
import two_layer_fc


def load(args):
  """The data set as load_data returns it; fetched if data_dir has none."""
  try:
    data_helpers.find_format(args.data_dir)
  except errors.DataSetError:
    cifar10_data.maybe_download_and_extract(args.data_dir, args.data_source)
  return data_helpers.load_data(args.data_dir)


def test_accuracy(model, data):
  """Accuracy of model on the whole test set (float)."""
  logits = two_layer_fc.inference(model, tf.constant(data['images_test']))
  return float(two_layer_fc.evaluation(logits, data['labels_test']))


def make_run_dir(train_dir):
  """train_dir/<YYYYmmdd-HHMMSS>[-N]/, new for each run."""
  base = os.path.join(train_dir, time.strftime('%Y%m%d-%H%M%S'))
  path, n = base, 1
  while os.path.exists(path):
    path, n = '%s-%d' % (base, n), n + 1
  os.makedirs(path)
  return path


def main(argv=None):
  args = build_parser().parse_args(argv)
  begin = time.time()
  # the source that would be used to fetch the data set, not just the flag
  args.data_source = cifar10_data.resolve_source(args.data_source)
  print('Parameters:')
  for key, value in sorted(vars(args).items()):
    print('%s = %s' % (key, value))
  run_folder.prepare_dir(args.train_dir, '--train_dir')
  data = load(args)
  if args.batch_size > len(data['labels_train']):
    raise errors.UsageError('--batch_size %d exceeds the %d training images'
                               % (args.batch_size, len(data['labels_train'])))
  run_dir = make_run_dir(args.train_dir)
  print('Logging to %s' % run_dir)
  seed = args.seed if args.seed is not None else int(time.time()) % (2**31)
  model = two_layer_fc.TwoLayerFC(args.hidden1, seed=seed)
  state = two_layer_fc.TrainState()
  _, manager = checkpoints.checkpoint_manager(run_dir,
                                              model=model,
                                              state=state)
  writer = tf.summary.create_file_writer(run_dir)

  @tf.function
  def train_step(images, labels):
    with tf.name_scope('train_step'):
      total, logits = two_layer_fc.training(model, state, images, labels,
                                            args.learning_rate,
                                            args.reg_constant)
    with tf.name_scope('accuracy'):
      accuracy = two_layer_fc.evaluation(logits, labels)
    return total, accuracy, logits

  def save():
    return checkpoints.save_checkpoint(manager, int(state.global_step))

  batches = data_helpers.gen_batch(
      (data['images_train'], data['labels_train']), args.batch_size,
      args.max_steps, seed=seed)
  profile = summaries.Profile(args.profile_steps, run_dir)
  with run_control.GracefulStop() as stop, writer.as_default(), profile:
    summaries.write_hparams(summaries.hparams_values(args, seed=seed),
                            HPARAMS_METRICS)
    saved = None  # the checkpoint saved before this step, said after its line
    for i, (images, labels) in enumerate(batches):
      profile.at(i)
      if i and i % CHECKPOINT_STEPS == 0:  # the weights of 'Step i' below
        saved = save()
      if i == 0:
        total, accuracy, logits = summaries.write_graph(train_step,
                                                        (images, labels))
      else:
        total, accuracy, logits = train_step(images, labels)
      if i % SUMMARY_STEPS == 0:
        print('Step {:d}, training accuracy {:g}'.format(i, float(accuracy)))
        summaries.write_scalars({'loss': total, 'train_accuracy': accuracy}, i)
        summaries.write_histograms({'logits': logits}, i)
      if saved:
        print('Saved checkpoint %s' % saved)
        saved = None
      if not tf.math.is_finite(total):
        raise errors.NanLossError('loss is %s at step %d' % (float(total), i))
      if stop.requested:
        print('Saved checkpoint %s' % save())
        return stop.exit_status
    print('Saved checkpoint %s' % save())  # the last step's weights
    profile.stop()
    accuracy = test_accuracy(model, data)
    tf.summary.scalar('test_accuracy', accuracy,
                      step=int(state.global_step))
  print('Test accuracy {:g}'.format(accuracy))
  print('Total time: {:5.2f}s'.format(time.time() - begin))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
