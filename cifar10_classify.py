"""Classifies image files with a convnet checkpoint or an exported model.

    python3 cifar10_classify.py cat.png ship.jpg                      # newest checkpoint in /tmp/cifar10_train
    python3 cifar10_classify.py cat.png --export_dir /tmp/cifar10_model  # a cifar10_export.py SavedModel

Prints one line per file: `<file>: <class> <probability>, ...` with the
top_k classes. Images must have the data set's size (--dataset; an export
knows its own): 32x32 RGB for CIFAR-10, in PNG, JPEG, BMP or GIF; --resize
takes other sizes, cut to the square around their centre and scaled (--squash:
the whole image scaled). A missing, unreadable, non-image or wrong-size file
is a one-line error naming it (exit status 1), before anything is classified.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys

from absl import flags

import data_sets
import models
from cifar10_toolkit import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string('checkpoint_dir', '/tmp/cifar10_train', 'classify with '
                    'the newest checkpoint here, its moving-average weights',
                    flag_values=FLAGS)
flags.DEFINE_string('export_dir', None, 'classify with this exported '
                    'SavedModel instead (cifar10_export.py)',
                    flag_values=FLAGS)
flags.DEFINE_integer('top_k', 3, 'classes to print per image (at most the '
                     'classes there are)', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_boolean('resize', False, 'take images of another size: the '
                     "square around the centre, scaled to the model's size "
                     '(antialiased bilinear), instead of refusing them',
                     flag_values=FLAGS)
flags.DEFINE_boolean('squash', False, "with --resize, scale the whole image "
                     "to the model's size whatever its aspect ratio, instead "
                     'of its centre square', flag_values=FLAGS)
cli.define_data_set_flag(FLAGS, data_sets.NAMES, data_sets.get,
                         'the data set the checkpoint was trained on')
cli.define_model_flag(FLAGS, models.NAMES, models.known, models.CHOICES)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__, 'IMAGE')  # -h, flag errors: before TF loads

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import cifar10_input  # noqa: E402
from cifar10_toolkit import errors  # noqa: E402
from cifar10_toolkit import images  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import serving  # noqa: E402


def load_export(path):
  """(serving function, class names, image shape, what it is) of an
  exported model."""
  if not os.path.isdir(path):
    raise errors.UsageError('--export_dir %s: no such folder' % path)
  try:
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures['serving_default']
    names = [n.decode() for n in
             loaded.signatures['metadata']()['class_names'].numpy()]
    shape = serve.structured_input_signature[1]['images'].shape[1:]
  except (OSError, ValueError, KeyError, IndexError,
          tf.errors.OpError) as e:  # IndexError: a truncated variables file
    raise errors.UsageError('--export_dir %s is not a model exported by '
                            'cifar10_export.py (%s)' % (
                                path, str(e).splitlines()[0]))
  return serve, names, tuple(shape), 'the model in %s' % path


def main(argv=None):
  paths = cli.parse(FLAGS, argv, __doc__, 'IMAGE')
  data_set = data_sets.get(FLAGS.dataset)
  if FLAGS.export_dir:
    serve, names, shape, title = load_export(FLAGS.export_dir)
  else:
    names, shape, title = (data_set.class_names, data_set.image_shape,
                           data_set.title)
  pictures = np.stack([images.read(p, shape, FLAGS.resize, FLAGS.squash,
                                   title) for p in paths])
  if not FLAGS.export_dir:
    classifier, _, _ = serving.restore_classifier(
        FLAGS.checkpoint_dir, data_set, models.get(FLAGS.model),
        cifar10_input)
    serve = classifier.serve
  probabilities = serve(images=tf.constant(pictures))['probabilities'].numpy()
  for path, probs in zip(paths, probabilities):
    top = np.argsort(-probs)[:FLAGS.top_k]
    print('%s: %s' % (path, ', '.join('%s %.3f' % (
        names[i], probs[i]) for i in top)))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
