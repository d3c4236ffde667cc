"""The trained convnet as a function of images: exported, loaded, served.

  Classifier(model, data_set, model_lib, input_lib).serve(uint8 images)
                                           probabilities, classes and class
                                           names (the serving signature);
                                           .metadata(): the class names and
                                           the input's form
  restore_classifier(checkpoint_dir, data_set, model_lib, input_lib)
                                           a Classifier with the weights of
                                           the newest readable checkpoint,
                                           or of the one --checkpoint names
  export(classifier, export_dir, tflite)   a SavedModel (and a TFLite
                                           model beside it), written whole
                                           or not at all
  tflite_runner(path)                      a TFLite model's serving
                                           signature, in TensorFlow's
                                           interpreter

cifar10_export.py exports; cifar10_classify.py classifies with an export or
straight from a checkpoint.
"""

import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from cifar10_toolkit import checkpoints
from cifar10_toolkit import config
from cifar10_toolkit import errors
from cifar10_toolkit import interface
from cifar10_toolkit import plugins
from cifar10_toolkit import run_control
from cifar10_toolkit import run_folder
from cifar10_toolkit import selection
from cifar10_toolkit import startup


INPUT = ('uint8 RGB images [N, %d, %d, %d] (%s\'s size); a center %dx%d crop '
         'and %s are done inside')
LABELS_FILE = 'labels.txt'  # the class names, one a line, in the assets
TFLITE_FILE = 'model.tflite'  # the TFLite model, in the export's folder
FLOAT_OPS = ['MEAN', 'SQUARED_DIFFERENCE', 'SUB', 'MAXIMUM', 'SQRT', 'DIV']


class Classifier(tf.Module):
  """The trained model as a function of images: what export and classify use.

  serve(images): uint8 images [N, height, width, channels] of the data
  set's size (CIFAR-10: [N, 32, 32, 3]) -> {'probabilities': float32 [N,
  classes], 'classes': int32 [N], 'class_names': string [N]}, with the
  evaluator's central crop (24x24 of 32) and normalization inside. Exported
  as the SavedModel's 'serving_default' signature; 'metadata' returns the
  class names in the order of the probabilities' columns and what the
  input must be, and assets/labels.txt holds the names, one a line.
  """

  def __init__(self, model, data_set, model_lib, input_lib,
               name='cifar10_classifier'):
    """model: model_lib's model (convnet.ConvNet); input_lib: the input
    library, whose central_crop_and_standardize is done inside."""
    super().__init__(name=name)
    self.model = model
    self._libs = (model_lib, input_lib)  # (modules: not tracked)
    self.class_names = tf.constant(data_set.class_names)
    side = data_set.image_shape[0]
    crop = input_lib.crop_size(side)
    standardized = getattr(input_lib, 'augmentation',
                           input_lib.TUTORIAL).standardize
    self.input_form = INPUT % (data_set.image_shape + (
        data_set.title, crop, crop, 'per-image standardization' if
        standardized else "the model's own normalization"))
    self.serve = tf.function(self._serve, autograph=False, input_signature=[
        tf.TensorSpec([None] + list(data_set.image_shape), tf.uint8,
                      name='images')])

  def _serve(self, images):
    """Classifies uint8 images [N, height, width, channels]: center crop
    and normalization (the input library's and the model's) inside."""
    model_lib, input_lib = self._libs
    logits, _ = model_lib.inference(
        self.model, input_lib.central_crop_and_standardize(images))
    classes = tf.argmax(logits, axis=1, output_type=tf.int32)
    return {'probabilities': tf.nn.softmax(logits), 'classes': classes,
            'class_names': tf.gather(self.class_names, classes)}

  @tf.function(input_signature=[], autograph=False)
  def metadata(self):
    """The class names (the probabilities' columns) and the input's form."""
    return {'class_names': self.class_names,
            'input': tf.constant(self.input_form)}


def restore_classifier(checkpoint_dir, data_set, model_lib, input_lib,
                       raw_weights=False, choice=None):
  """A Classifier with the weights of the checkpoint --checkpoint names
  (choice: selection.choose; None: the newest readable one), which must
  have been trained on data_set (a dataset.DataSet) with model_lib's model.

  Returns:
    (classifier, checkpoint path, global step).

  Raises:
    errors.UsageError: no checkpoint, or none that reads.
  """
  input_lib = interface.input_for(model_lib, input_lib)
  model = config.new_model(model_lib, input_lib, data_set)
  state = model_lib.TrainState(model)
  ckpt = tf.train.Checkpoint(model=model, state=state)
  path = selection.choose(checkpoint_dir, choice)
  if path:
    checkpoints.restore(ckpt, path, '--checkpoint', data_set.name,
                        plugins.name_of(model_lib))
  else:
    path = checkpoints.resume(ckpt, checkpoint_dir, data_set=data_set.name,
                              model=plugins.name_of(model_lib))
  if path is None:
    raise errors.UsageError('no checkpoint in %s' % checkpoint_dir)
  if not raw_weights:
    model_lib.use_moving_averages(model, state)
  return (Classifier(model, data_set, model_lib, input_lib), path,
          int(state.global_step))


EXPORT_TMP_PREFIX = '.export-'


def _remove_stale_exports(parent):
  """Removes what exports killed outright (kill -9) left in parent: their
  hidden .export-<pid>-* folders (the model, its labels), whose process is
  gone."""
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


def export(classifier, export_dir, tflite=None):
  """Saves classifier as a SavedModel at export_dir, atomically.

  tflite: None, or (quantization, representative images): the SavedModel's
  serving signature converted by TensorFlow's TFLiteConverter into
  export_dir/model.tflite (tflite_model), before the folder is renamed.

  Written into a hidden folder beside export_dir, then renamed: a stop by
  Ctrl-C, SIGTERM or SIGHUP removes it (the status is the signal's), and one
  killed outright is removed by the next export into the same parent. The
  model gets the mode any new folder gets (the umask's), so that a serving
  process of another user can read it. assets/labels.txt holds the class
  names (the model's `labels_file` asset).
  """
  if os.path.exists(export_dir):
    raise errors.UsageError('--export_dir %s exists; remove it or choose '
                               'another' % export_dir)
  parent = os.path.dirname(os.path.abspath(export_dir))
  run_folder.prepare_dir(parent, '--export_dir', own=False)
  _remove_stale_exports(parent)
  tmp = tempfile.mkdtemp(prefix='%s%d-' % (EXPORT_TMP_PREFIX, os.getpid()),
                         dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)
  labels = tempfile.mkdtemp(prefix='%s%d-labels-' % (EXPORT_TMP_PREFIX,
                                                     os.getpid()), dir=parent)
  try:
    with run_control.signals_raise():
      path = os.path.join(labels, LABELS_FILE)
      with open(path, 'x') as f:
        f.write('\n'.join(n.decode() for n in
                          classifier.class_names.numpy()) + '\n')
      classifier.labels_file = tf.saved_model.Asset(path)
      tf.saved_model.save(classifier, tmp, signatures={
          'serving_default': classifier.serve,
          'metadata': classifier.metadata})
      if tflite:
        with open(os.path.join(tmp, TFLITE_FILE), 'xb') as f:
          f.write(tflite_model(tmp, *tflite))
      os.rename(tmp, export_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(labels, ignore_errors=True)


def tflite_model(saved_model_dir, quantization='none', images=None):
  """The serving signature of a SavedModel as a TFLite model.

  The same signature (uint8 images in; probabilities, classes and class
  names out), TensorFlow Lite's built-in ops only. The convnet's fast LRN
  converts as it is (slices, sums, rsqrt: no XLA in TFLite, the same
  arithmetic).

  Args:
    quantization: 'none' (float32), 'dynamic' (int8 weights, float
      activations) or 'int8' (weights and activations, calibrated on images;
      the standardization's ops, FLOAT_OPS, stay float: in int8 its
      division meets a divisor of 0 on some images, and the interpreter
      stops, as on CIFAR-10's test image 132).
    images: uint8 [N, height, width, channels], the representative set of
      'int8'.

  Returns:
    The model's bytes.

  Raises:
    errors.UsageError: the model has an op TFLite cannot convert.
  """
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_dir, signature_keys=['serving_default'])
  if quantization != 'none':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == 'int8':
    converter.representative_dataset = lambda: (
        {'images': images[i:i + 1]} for i in range(len(images)))
  try:
    with startup.noise_hidden():
      if quantization != 'int8':
        return converter.convert()
      return tf.lite.experimental.QuantizationDebugger(
          converter=converter, debug_dataset=converter.representative_dataset,
          debug_options=tf.lite.experimental.QuantizationDebugOptions(
              denylisted_ops=FLOAT_OPS)).get_nondebug_quantized_model()
  except Exception as e:  # ConverterError, ValueError: an op TFLite lacks
    raise errors.UsageError('--tflite: the model does not convert to TFLite '
                            '(%s)' % run_control.first_line(e))


def tflite_runner(path):
  """The 'serving_default' signature of the TFLite model at path, run by
  TensorFlow's TFLite interpreter on every core, called once on a blank
  image so that its start-up lines are said (and kept off stderr) here.

  Raises:
    ValueError, KeyError, RuntimeError: not such a model.
  """
  with startup.noise_hidden():
    runner = tf.lite.Interpreter(
        model_path=path, num_threads=os.cpu_count()).get_signature_runner(
            'serving_default')
    shape = runner.get_input_details()['images']['shape_signature'][1:]
    runner(images=np.zeros([1] + list(shape), np.uint8))
  return runner
