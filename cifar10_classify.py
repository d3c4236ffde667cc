"""Classifies image files with a convnet checkpoint or an exported model.

    python3 cifar10_classify.py cat.png ship.jpg                      # newest checkpoint in /tmp/cifar10_train
    python3 cifar10_classify.py photos/ 'more/**/*.jpg' --output top3.csv
    python3 cifar10_classify.py cat.png --export_dir /tmp/cifar10_model  # a cifar10_export.py SavedModel
    python3 cifar10_classify.py cat.png --tflite /tmp/cifar10_model/model.tflite

Takes image files, folders (every JPEG, PNG, BMP or GIF file in them,
recursively, hidden ones left out) and glob patterns (quoted, '**' for any
depth). Prints one line per file: `<file>: <class> <probability>, ...` with
the top_k classes, or with --output writes them to a CSV (.csv: path,
class_1, probability_1, ...) or JSON lines (.jsonl) file, written whole
at the end. Images must have the data set's size (--dataset; an export knows
its own): 32x32 RGB for CIFAR-10; --resize takes other sizes, cut to the
square around their centre and scaled (--squash: the whole image scaled).
A file that cannot be classified (missing, unreadable, not an image, the
wrong size) is one line on stderr naming it and the rest are classified:
the exit status is 0 when every file was, 1 when any was not. A checkpoint
or model that cannot be used is one line and exit 1, before any file is read.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import csv
import glob
import io
import json
import sys

from absl import flags

import data_sets
import models
from cifar10_toolkit import cli
from cifar10_toolkit import folders

FLAGS = flags.FlagValues()
flags.DEFINE_string('checkpoint_dir', '/tmp/cifar10_train', 'classify with '
                    'the newest checkpoint here, its moving-average weights',
                    flag_values=FLAGS)
flags.DEFINE_string('export_dir', None, 'classify with this exported '
                    'SavedModel instead (cifar10_export.py)',
                    flag_values=FLAGS)
flags.DEFINE_string('tflite', None, 'classify with this TFLite model '
                    'instead (cifar10_export.py --tflite: export_dir/'
                    'model.tflite), run by TensorFlow\'s TFLite interpreter',
                    flag_values=FLAGS)
cli.mark_exclusive(FLAGS, 'export_dir', 'tflite')
flags.DEFINE_integer('top_k', 3, 'classes to print per image (at most the '
                     'classes there are)', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_boolean('resize', False, 'take images of another size: the '
                     "square around the centre, scaled to the model's size "
                     '(antialiased bilinear), instead of refusing them',
                     flag_values=FLAGS)
flags.DEFINE_string('output', None, 'write the top_k classes of each file '
                    'to this .csv or .jsonl file instead of the console',
                    flag_values=FLAGS)
flags.register_validator(
    'output', lambda v: v is None or v.lower().endswith(('.csv', '.jsonl')),
    message='must end in .csv or .jsonl (the format)', flag_values=FLAGS)
flags.DEFINE_boolean('squash', False, "with --resize, scale the whole image "
                     "to the model's size whatever its aspect ratio, instead "
                     'of its centre square', flag_values=FLAGS)
flags.DEFINE_float('max_megapixels', folders.MAX_MEGAPIXELS, 'refuse '
                   'an image whose header declares more pixels than this '
                   '(decoding takes 4 bytes a pixel or more)', lower_bound=0,
                   flag_values=FLAGS)
cli.define_checkpoint_flag(FLAGS, 'classify with (its moving-average '
                           'weights)')
cli.define_data_set_flag(FLAGS, data_sets.NAMES, data_sets.get,
                         'the data set the checkpoint was trained on')
cli.define_model_flag(FLAGS, models.NAMES, models.known, models.CHOICES)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__, 'IMAGE')  # -h, flag errors: before TF loads
  models.before_tensorflow(FLAGS.model)  # (oneDNN for some models)

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


BATCH = 256  # files read and classified at a time: memory stays bounded


def load_tflite(path):
  """(serving function, class names, image shape, what it is) of the TFLite
  model of cifar10_export.py --tflite, run by TensorFlow's TFLite
  interpreter; the class names from the export's assets/labels.txt."""
  labels = os.path.join(os.path.dirname(path), 'assets', serving.LABELS_FILE)
  if not os.path.isfile(path):
    raise errors.UsageError('--tflite %s: no such file' % path)
  try:
    runner = serving.tflite_runner(path)
    shape = runner.get_input_details()['images']['shape_signature'][1:]
    classes = runner.get_output_details()['probabilities']['shape'][-1]
  except (ValueError, KeyError, RuntimeError) as e:
    raise errors.UsageError('--tflite %s is not a model exported by '
                            'cifar10_export.py --tflite (%s)' % (
                                path, str(e).splitlines()[0]))
  try:
    with open(labels) as f:
      names = f.read().splitlines()
  except OSError as e:
    raise errors.UsageError('--tflite %s: its class names, %s, cannot be '
                            'read (%s)' % (path, labels, e.strerror))
  if len(names) != classes:
    raise errors.UsageError('--tflite %s: %s names %d classes, the model has '
                            '%d' % (path, labels, len(names), classes))
  return runner, names, tuple(int(d) for d in shape), 'the model %s' % path


def main(argv=None):
  args = cli.parse(FLAGS, argv, __doc__, 'IMAGE')
  data_set = data_sets.get(FLAGS.dataset)
  if FLAGS.output:
    _check_output(FLAGS.output)
  if FLAGS.export_dir:
    serve, names, shape, title = load_export(FLAGS.export_dir)
  elif FLAGS.tflite:
    serve, names, shape, title = load_tflite(FLAGS.tflite)
  else:
    classifier, _, _ = serving.restore_classifier(
        FLAGS.checkpoint_dir, data_set, models.get(FLAGS.model),
        cifar10_input, choice=FLAGS.checkpoint)
    serve, names, shape, title = (classifier.serve, data_set.class_names,
                                  data_set.image_shape, data_set.title)
  paths, failed = expand(args)
  out = io.StringIO() if FLAGS.output else sys.stdout
  table = csv.writer(out, lineterminator='\n')
  if FLAGS.output and FLAGS.output.lower().endswith('.csv'):
    table.writerow(['path'] + ['%s_%d' % (what, i + 1) for i in range(
        min(FLAGS.top_k, len(names))) for what in ('class', 'probability')])
  done = 0
  for start in range(0, len(paths), BATCH):
    batch, pictures = [], []
    for path in paths[start:start + BATCH]:
      try:
        pictures.append(images.read(
            path, shape, FLAGS.resize, FLAGS.squash, title,
            int(FLAGS.max_megapixels * 2 ** 20), ' (--max_megapixels)'))
        batch.append(path)
      except images.ImageError as e:
        _file_error(e)
        failed += 1
    if not batch:
      continue
    probabilities = np.asarray(serve(images=np.stack(pictures))[
        'probabilities'])
    for path, probs in zip(batch, probabilities):
      top = [(names[i], float(probs[i])) for i in
             np.argsort(-probs, kind='stable')[:FLAGS.top_k]]
      _write(out, table, path, top)
    done += len(batch)
  if FLAGS.output:
    folders.write_whole(FLAGS.output, out.getvalue())
    print('Classified %d file(s) to %s%s' % (
        done, FLAGS.output, '; %d could not be' % failed if failed else ''))
  return 1 if failed else 0


def expand(args):
  """The image files that the arguments name (files, folders searched
  recursively, glob patterns), each once, in the order given; and how many
  arguments named none (each said in one line on stderr)."""
  paths, seen, failed = [], set(), 0
  for arg in args:
    if os.path.isdir(arg):
      found, _ = folders.image_files(arg)
      why = 'a folder with no JPEG, PNG, BMP or GIF file'
    elif glob.has_magic(arg) and not os.path.lexists(arg):
      found = sorted(p for p in glob.glob(arg, recursive=True)
                     if os.path.isfile(p) and p.lower().endswith(
                         folders.IMAGE_EXTENSIONS))
      why = 'a pattern that matches no image file'
    else:
      found, why = [arg], None  # (images.read names what is wrong with it)
    if not found:
      _file_error('%s: %s' % (arg, why))
      failed += 1
    for path in found:
      if path not in seen:
        seen.add(path)
        paths.append(path)
  return paths, failed


def _check_output(path):
  """--output must be a file (new or not) in a folder this user can write."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise errors.UsageError('--output %s is a folder' % path)
  if not os.path.isdir(folder):
    raise errors.UsageError('--output %s: folder %s does not exist' % (
        path, folder))
  if not os.access(folder, os.W_OK | os.X_OK):
    raise errors.UsageError('--output %s: folder %s cannot be written' % (
        path, folder))


def _file_error(line):
  startup.say('%s: error: %s' % (startup.prog(), line))


def _write(out, table, path, top):
  if not FLAGS.output:
    out.write('%s: %s\n' % (path, ', '.join('%s %.3f' % t for t in top)))
    out.flush()
  elif FLAGS.output.lower().endswith('.jsonl'):
    out.write(json.dumps({'path': path, 'top_k': [
        {'class': c, 'probability': p} for c, p in top]}) + '\n')
  else:
    table.writerow([path] + [x for t in top for x in t])


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
