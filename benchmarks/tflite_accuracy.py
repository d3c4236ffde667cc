"""Top-1 of exported models on the test set: the SavedModel against the TFLite
models that cifar10_export.py --tflite wrote.

    python3 -m benchmarks.tflite_accuracy --data_dir /tmp/cifar10_data EXPORT_DIR...

For each export folder: the SavedModel's precision @ 1 over the data set's
test files, and that of its model.tflite (run by TensorFlow's TFLite
interpreter, batches of 500), with how many images the two classify
differently and the file's size.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import sys  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

import data_sets  # noqa: E402
from cifar10_toolkit import cli  # noqa: E402

FLAGS = flags.FlagValues()
cli.define_data_flags(FLAGS, (data_sets.NAMES, data_sets.get))
BATCH = 500

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__, 'EXPORT_DIR')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import cifar10_input  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import serving  # noqa: E402


def test_set(data_dir, data_set):
  """uint8 images [N, h, w, c] and int labels [N] of the test files."""
  records = cifar10_input.load_records(
      [os.path.join(data_dir, data_set.folder, n)
       for n in data_set.test_files], data_set)
  images, labels = cifar10_input.decode_records(records, data_set)
  return images.numpy(), labels.numpy()


def classes(serve, images):
  return np.concatenate([np.asarray(serve(images=images[i:i + BATCH])[
      'classes']) for i in range(0, len(images), BATCH)])


def main(argv=None):
  folders = cli.parse(FLAGS, argv, __doc__, 'EXPORT_DIR')
  data_set = data_sets.get(FLAGS.dataset)
  run_control.fetch_data_set(FLAGS.data_dir, FLAGS.data_source, data_set)
  images, labels = test_set(FLAGS.data_dir, data_set)
  print('%d test images of %s' % (len(labels), data_set.title))
  for folder in folders:
    saved = tf.saved_model.load(folder).signatures['serving_default']
    begin = time.time()
    reference = classes(saved, images)
    print('%s: SavedModel precision @ 1 = %.4f (%.1f s)' % (
        folder, np.mean(reference == labels), time.time() - begin))
    path = os.path.join(folder, serving.TFLITE_FILE)
    runner = serving.tflite_runner(path)
    begin = time.time()
    lite = classes(runner, images)
    print('%s: TFLite precision @ 1 = %.4f (%.1f s), %d images classified '
          'otherwise, %.2f MB' % (
              path, np.mean(lite == labels), time.time() - begin,
              np.sum(lite != reference), os.path.getsize(path) / 1e6))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
