"""Exports a convnet checkpoint as a SavedModel that classifies images.

    python3 cifar10_export.py --checkpoint_dir /tmp/cifar10_train --export_dir /tmp/cifar10_model

Restores the newest readable checkpoint of checkpoint_dir (walking back past
damaged ones, as the evaluator does) with its moving-average weights (the
ones cifar10_eval.py evaluates; --raw_weights for the trained ones) and saves
convnet.Classifier: its serving signature takes uint8 images [N, 32, 32, 3]
and returns 'probabilities' [N, 10], 'classes' [N] and 'class_names' [N].
The SavedModel is written to a temporary folder beside export_dir and renamed
into place when complete; an existing export_dir is never overwritten.

    loaded = tf.saved_model.load('/tmp/cifar10_model')
    out = loaded.signatures['serving_default'](images=uint8_images)
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import cli
if __name__ == '__main__':
  cli.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import re
import shutil
import signal
import sys
import tempfile


def build_parser():
  p = cli.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--checkpoint_dir', default='/tmp/cifar10_train',
                 help='where cifar10_train.py writes checkpoints (default '
                 '%(default)s)')
  p.add_argument('--export_dir', default='/tmp/cifar10_model',
                 help='the SavedModel folder to create (default %(default)s)')
  cli.add_bool(p, 'raw_weights', False, 'export the raw weights, not '
                     'their moving averages')
  return p


if __name__ == '__main__':
  cli.parse_early(build_parser)  # -h and flag errors, before TensorFlow loads

import tensorflow as tf
import convnet
import convnet_training
import checkpoints
import errors
import run_control
import run_folder


def restore_classifier(checkpoint_dir, raw_weights=False):
  """A convnet.Classifier with the newest readable checkpoint's weights.

  Returns:
    (classifier, checkpoint path, global step).

  Raises:
    errors.UsageError: no checkpoint, or none that reads.
  """
  model = convnet.ConvNet()
  state = convnet_training.TrainState(model)
  path = checkpoints.resume(tf.train.Checkpoint(model=model, state=state),
                          checkpoint_dir)
  if path is None:
    raise errors.UsageError('no checkpoint in %s' % checkpoint_dir)
  if not raw_weights:
    convnet.use_moving_averages(model, state)
  return convnet.Classifier(model), path, int(state.global_step)


EXPORT_TMP_PREFIX = '.export-'


def _remove_stale_exports(parent):
  """Removes what exports killed outright (kill -9) left in parent: their
  hidden .export-<pid>-* folders, whose process is gone."""
  for name in os.listdir(parent):
    m = re.match(r'^%s(\d+)-' % re.escape(EXPORT_TMP_PREFIX), name)
    if m and not _alive(int(m.group(1))):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def export(classifier, export_dir):
  """Saves classifier as a SavedModel at export_dir, atomically.

  Written into a hidden folder beside export_dir, then renamed: a stop by
  Ctrl-C, SIGTERM or SIGHUP removes it (the status is the signal's), and one
  killed outright is removed by the next export into the same parent. The
  model gets the mode any new folder gets (the umask's), so that a serving
  process of another user can read it.
  """
  if os.path.exists(export_dir):
    raise errors.UsageError('--export_dir %s exists; remove it or choose '
                               'another' % export_dir)
  parent = os.path.dirname(os.path.abspath(export_dir))
  run_folder.prepare_dir(parent, '--export_dir')
  _remove_stale_exports(parent)
  tmp = tempfile.mkdtemp(prefix='%s%d-' % (EXPORT_TMP_PREFIX, os.getpid()),
                         dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)
  try:
    with run_control.signals_raise():
      tf.saved_model.save(classifier, tmp,
                          signatures={'serving_default': classifier.serve})
      os.rename(tmp, export_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
  args = build_parser().parse_args(argv)
  classifier, path, step = restore_classifier(args.checkpoint_dir,
                                              args.raw_weights)
  export(classifier, args.export_dir)
  # the export is complete: a late Ctrl-C must not turn it into a failure
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  print('Exported %s (step %d, %s weights) to %s' % (
      path, step, 'raw' if args.raw_weights else 'moving-average',
      args.export_dir))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
