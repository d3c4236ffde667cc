"""Exports a convnet checkpoint as a SavedModel that classifies images.

    python3 cifar10_export.py --checkpoint_dir /tmp/cifar10_train --export_dir /tmp/cifar10_model

Restores the newest readable checkpoint of checkpoint_dir (walking back past
damaged ones, as the evaluator does), or the one --checkpoint names (a step,
a path, or 'best': the best one cifar10_eval.py kept), with its
moving-average weights (the ones cifar10_eval.py evaluates; --raw_weights
for the trained ones) and saves cifar10_toolkit.serving.Classifier: its
serving signature takes uint8 images [N, 32, 32, 3] and returns
'probabilities' [N, 10], 'classes' [N] and 'class_names' [N].
--tflite also writes export_dir/model.tflite, the same signature through
TensorFlow's TFLiteConverter: float32, or with --quantize dynamic (int8
weights) or int8 (weights and activations, calibrated on the first 200
training images). The SavedModel is written to a temporary folder beside
export_dir and renamed into place when complete; an existing export_dir is
never overwritten.

    loaded = tf.saved_model.load('/tmp/cifar10_model')
    out = loaded.signatures['serving_default'](images=uint8_images)
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import signal
import sys

from absl import flags

import data_sets
import models
from cifar10_toolkit import cli

FLAGS = flags.FlagValues()
REPRESENTATIVE_IMAGES = 200  # the calibration set of --quantize int8
QUANTIZATIONS = ['none', 'dynamic', 'int8']  # serving.tflite_model's
flags.DEFINE_string('checkpoint_dir', '/tmp/cifar10_train', 'where '
                    'cifar10_train.py writes checkpoints', flag_values=FLAGS)
flags.DEFINE_string('export_dir', '/tmp/cifar10_model', 'the SavedModel '
                    'folder to create', flag_values=FLAGS)
flags.DEFINE_boolean('raw_weights', False, 'export the raw weights, not '
                     'their moving averages', flag_values=FLAGS)
cli.define_checkpoint_flag(FLAGS, 'export')
flags.DEFINE_boolean('tflite', False, 'also write a TFLite model, '
                     'export_dir/model.tflite (cifar10_classify.py --tflite '
                     'runs it)', flag_values=FLAGS)
flags.DEFINE_enum('quantize', 'none', QUANTIZATIONS, 'with '
                  '--tflite: float32 (none), int8 weights (dynamic), or int8 '
                  'weights and activations calibrated on %d training images '
                  '(int8: reads --data_dir)' % REPRESENTATIVE_IMAGES,
                  flag_values=FLAGS)
flags.register_multi_flags_validator(
    ['tflite', 'quantize'], lambda v: v['tflite'] or v['quantize'] == 'none',
    message='--quantize needs --tflite', flag_values=FLAGS)
cli.define_data_flags(FLAGS, what='with --quantize int8: where the data set '
                      'is, or is fetched to')
cli.define_data_set_flag(FLAGS, data_sets.NAMES, data_sets.get,
                         'the data set the checkpoint was trained on')
cli.define_model_flag(FLAGS, models.NAMES, models.known, models.CHOICES)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads
  models.before_tensorflow(FLAGS.model)  # (oneDNN for some models)

import cifar10_input  # noqa: E402  (TensorFlow loads here)
from cifar10_toolkit import interface  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import serving  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  data_set = data_sets.get(FLAGS.dataset)
  classifier, path, step = serving.restore_classifier(
      FLAGS.checkpoint_dir, data_set, models.get(FLAGS.model), cifar10_input,
      FLAGS.raw_weights, FLAGS.checkpoint)
  tflite = None
  if FLAGS.tflite:
    images = None
    if FLAGS.quantize == 'int8':
      run_control.fetch_data_set(FLAGS.data_dir, FLAGS.data_source, data_set)
      images = interface.training_images(cifar10_input, FLAGS.data_dir,
                                         data_set, REPRESENTATIVE_IMAGES)
    tflite = (FLAGS.quantize, images)
  serving.export(classifier, FLAGS.export_dir, tflite)
  # the export is complete: a late Ctrl-C must not turn it into a failure
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  print('Exported %s (step %d, %s weights) to %s%s' % (
      path, step, 'raw' if FLAGS.raw_weights else 'moving-average',
      FLAGS.export_dir, ', and as TFLite (%s) to %s' % (
          'float32' if FLAGS.quantize == 'none' else FLAGS.quantize + ' '
          'quantized', os.path.join(FLAGS.export_dir, serving.TFLITE_FILE))
      if FLAGS.tflite else ''))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
