"""The model interface: what a model module (--model) declares, and the
checks that a module does.

A model module (convnet.py is the tutorial's; docs/extending.md) declares:

  Model(seed, num_classes, image_size)    a tf.Module: the variables, drawn
                                          from seed; `params`, an ordered
                                          dict name -> tf.Variable
  TrainState(model, seed, compute_dtype, global_batch, schedule)
                                          a tf.Module of what training
                                          changes besides the weights
                                          (global_step, seed, global_batch,
                                          the moving averages, ...)
  SCHEDULE                                a namedtuple of the schedule's
                                          hyperparameters, train_size among
                                          them (the flags of the same names
                                          override it)
  inference(model, images, compute_dtype, slices) -> (logits, activations)
  loss(model, logits, labels)             -> ordered dict of loss terms,
                                          'total_loss' their sum
  training(model, state, images, labels, global_batch_size,
           with_summaries, slices)        one step, in replica context
  evaluation(logits, labels)              -> int32 count of correct
  use_moving_averages(model, state)       the weights evaluation uses
  loss_averages(state)                    name -> the losses' averages

and may declare gradients() and update(), training's two halves, which XLA
compiles apart with several replicas (--jit_compile); INPUT, how its
training images are distorted (the input library's Augmentation; the
tutorial's when it declares none); adapt(model, images), called with the
training images (uint8 [N, side, side, channels]) once before the first
step of a run from scratch, to set variables of the model from the data
(resnet20's mean image; the checkpoint keeps them); and AUTO_SLICES =
False, for one slice under --slices auto (a model whose fused kernels beat
slices).

  missing(module)                 the names it lacks
  check(module)                   errors.UsageError naming the module and
                                  what it lacks
  check_output(module, model, num_classes, image_shape)
                                  the same when inference's logits are not
                                  [batch, num_classes]
  input_for(module, input_lib)    the input library with the model's INPUT
  training_images(input_lib, data_dir, data_set, num)
                                  the training set's images (or its first
                                  num), uint8
  adapt(module, model, input_lib, data_dir, data_set)
                                  the module's adapt with the training set
"""

import functools
import types

import numpy as np
import tensorflow as tf

from cifar10_toolkit import errors
from cifar10_toolkit import plugins

REQUIRED = ('Model', 'TrainState', 'SCHEDULE', 'inference', 'loss',
            'training', 'evaluation', 'use_moving_averages', 'loss_averages')
SPLIT = ('gradients', 'update')  # optional: training in two halves


def _where(module):
  path = getattr(module, '__file__', None)
  return 'model module %s%s' % (plugins.name_of(module),
                                ' (%s)' % path if path else '')


def missing(module):
  """The names of REQUIRED that module lacks (SCHEDULE: a namedtuple with a
  train_size; the others callable)."""
  lacking = [n for n in REQUIRED
             if not callable(getattr(module, n, None)) and n != 'SCHEDULE']
  fields = getattr(getattr(module, 'SCHEDULE', None), '_fields', ())
  if 'train_size' not in fields:
    lacking.insert(2, 'SCHEDULE (a namedtuple with a train_size field)')
  return lacking


def splits(module):
  """Whether module declares training's two halves (SPLIT)."""
  return all(callable(getattr(module, n, None)) for n in SPLIT)


def check(module):
  """Raises errors.UsageError, naming the module, when it lacks a name of
  the interface. Returns module."""
  lacking = missing(module)
  if lacking:
    raise errors.UsageError('%s lacks %s (the model interface: '
                            'docs/extending.md)' % (_where(module),
                                                    ', '.join(lacking)))
  return module


def check_output(module, model, num_classes, image_shape):
  """Raises errors.UsageError, naming the module, when inference fails on
  two blank images (traced as the scripts trace it: a Python branch on a
  tensor fails) or does not give one logit per class.

  Args:
    module: the model module; model: its Model.
    num_classes: the data set's classes.
    image_shape: (side, side, channels) the model is fed.
  """
  shape = [2] + list(image_shape)
  try:  # traced as the scripts trace it: in a graph, without AutoGraph
    logits = tf.function(lambda images: module.inference(model, images)[0],
                         autograph=False)(tf.zeros(shape))
  except tf.errors.OperatorNotAllowedInGraphError:
    raise errors.UsageError(
        '%s: inference branches or loops on a tensor in Python, which the '
        "scripts' graph functions (traced without AutoGraph) cannot do: "
        'use tf.cond or tf.while_loop there, or decorate that function '
        'with @tf.autograph.to_graph (docs/extending.md)' % _where(module))
  except Exception as e:  # the user's code: say where, in one line
    raise errors.UsageError('%s: inference fails on a batch of shape %s: '
                            '%s: %s' % (_where(module), shape,
                                        type(e).__name__,
                                        str(e).strip().splitlines()[0]
                                        if str(e).strip() else ''))
  if logits.shape.as_list() != [2, num_classes]:
    raise errors.UsageError(
        '%s: inference gives logits of shape %s for a batch of shape %s; '
        'the data set has %d classes, so [2, %d] was expected' % (
            _where(module), logits.shape.as_list(), shape, num_classes,
            num_classes))


def input_for(module, input_lib):
  """input_lib (cifar10_input) with the Augmentation that module declares
  (INPUT) passed to each function that takes one (input_lib.AUGMENTED),
  and as its `augmentation`; input_lib itself when the module declares
  none, or input_lib's default (TUTORIAL)."""
  augmentation = getattr(module, 'INPUT', None)
  if augmentation is None or augmentation == input_lib.TUTORIAL:
    return input_lib
  lib = types.SimpleNamespace(**{k: v for k, v in vars(input_lib).items()
                                 if not k.startswith('_')})
  lib.augmentation = augmentation
  for name in input_lib.AUGMENTED:
    setattr(lib, name, functools.partial(getattr(input_lib, name),
                                         augmentation=augmentation))
  return lib


def training_images(input_lib, data_dir, data_set, num=None):
  """The training images of data_dir, uint8 [N, height, width, channels]:
  all of them, or the first num.

  Raises:
    errors.DataSetError: as input_lib.training_files and load_records.
  """
  files = input_lib.training_files(data_dir, data_set)
  if num is None:
    records = input_lib.load_records(files, data_set)
  else:  # (only the records wanted are read)
    first = tf.data.FixedLengthRecordDataset(files, data_set.record_bytes)
    records = tf.io.decode_raw(
        first.take(num).batch(num).get_single_element(), tf.uint8)
  images, _ = input_lib.decode_records(records, data_set)
  return np.asarray(images)


def adapt(module, model, input_lib, data_dir, data_set):
  """Calls module.adapt(model, images), when the module declares it, with
  the training images of data_dir (training_images).

  Raises:
    errors.DataSetError: as training_images.
  """
  if callable(getattr(module, 'adapt', None)):
    module.adapt(model, training_images(input_lib, data_dir, data_set))
