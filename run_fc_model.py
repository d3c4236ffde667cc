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

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import dataclasses
import sys
import time

from absl import flags

import data_sets
from cifar10_toolkit import cli

SUMMARY_STEPS = 100      # print and write summaries every this many steps
CHECKPOINT_STEPS = 1000  # save a checkpoint every this many steps
MAX_HIDDEN1 = 65536      # 3072 x 65536 float32 weights: 805 MB
# The scalars the HParams dashboard shows beside each run's values.
HPARAMS_METRICS = [('test_accuracy', '', 'test accuracy'),
                   ('train_accuracy', '', 'training accuracy'),
                   ('loss', '', 'training loss')]


FLAGS = flags.FlagValues()
# The blog's flags and defaults, plus data_dir, data_source and seed.
flags.DEFINE_float('learning_rate', 0.001, 'learning rate', flag_values=FLAGS)
flags.DEFINE_integer('max_steps', 2000, 'number of training steps',
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('hidden1', 120, 'units in the hidden layer',
                     lower_bound=1, upper_bound=MAX_HIDDEN1, flag_values=FLAGS)
flags.DEFINE_integer('batch_size', 400, 'images per batch', lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_string('train_dir', 'tf_logs', 'each run logs into a '
                    'time-stamped folder under it', flag_values=FLAGS)
flags.DEFINE_float('reg_constant', 0.1, 'regularization constant',
                   lower_bound=0, flag_values=FLAGS)
cli.define_data_flags(FLAGS, (data_sets.NAMES, data_sets.get),
                      what='folder holding cifar-10-batches-py or '
                      'cifar-10-batches-bin (another --dataset: its '
                      'folder), or where the binary version is fetched to')
flags.DEFINE_integer('seed', None, 'seed of the initial weights and batch '
                     'order (default: random)', lower_bound=0,
                     upper_bound=cli.MAX_SEED, flag_values=FLAGS)
cli.define_profile_flag(FLAGS)
# (float32 values: beyond its range a step computes NaN)
flags.register_validator('learning_rate', lambda v: 0 < v <= cli.FLOAT32_MAX,
                         message='must be a positive float32 number',
                         flag_values=FLAGS)
flags.register_validator('reg_constant', lambda v: v <= cli.FLOAT32_MAX,
                         message='must be a float32 number', flag_values=FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads

import tensorflow as tf  # noqa: E402  (TensorFlow loads here)
import data_helpers  # noqa: E402
import two_layer_fc  # noqa: E402
from cifar10_toolkit import checkpoints  # noqa: E402
from cifar10_toolkit import errors  # noqa: E402
from cifar10_toolkit import fc_runs  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import run_folder  # noqa: E402
from cifar10_toolkit import run_record  # noqa: E402
from cifar10_toolkit import selection  # noqa: E402
from cifar10_toolkit import summaries  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  begin = time.monotonic()
  args = fc_runs.resolve(FLAGS, data_sets.get)  # the seed, the source
  data_set = data_sets.get(args.dataset)
  print('Parameters:')
  for key, value in sorted(dataclasses.asdict(args).items()):
    print('%s = %s' % (key, value))
  with run_folder.removed_if_empty(  # (left empty by a failure: removed)
      run_folder.prepare_dir(args.train_dir, '--train_dir')):
    data = fc_runs.load(args.data_dir, args.data_source, data_set,
                        data_helpers)
    if args.batch_size > len(data['labels_train']):
      raise errors.UsageError('--batch_size %d exceeds the %d training images'
                              % (args.batch_size, len(data['labels_train'])))
  run_dir = fc_runs.make_run_dir(args.train_dir)
  print('Logging to %s' % run_dir)
  seed = args.seed
  model = two_layer_fc.TwoLayerFC(args.hidden1, data_set.image_bytes,
                                  data_set.num_classes, seed=seed)
  state = two_layer_fc.TrainState()
  _, manager = checkpoints.checkpoint_manager(
      run_dir, model=model, state=state,
      record=run_record.RunRecord(data_set.name, {}))
  writer = tf.summary.create_file_writer(run_dir)

  @tf.function(autograph=False)
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
    summaries.write_hparams(args.hparams(), HPARAMS_METRICS)
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
    last = save()
    print('Saved checkpoint %s' % last)  # the last step's weights
    profile.stop()
    accuracy = fc_runs.test_accuracy(two_layer_fc, model, data)
    tf.summary.scalar('test_accuracy', accuracy,
                      step=int(state.global_step))
  selection.keep_if_best(run_dir, last, int(state.global_step), accuracy,
                         len(data['labels_test']))  # (--checkpoint best)
  print('Test accuracy {:g}'.format(accuracy))
  print('Total time: {:5.2f}s'.format(time.monotonic() - begin))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
