"""Feeding CIFAR-10 to TensorFlow: the tutorial's preprocessing, tf.data.

Functions, in the order a training program chains them (after
dataset.maybe_download_and_extract(data_dir, source, data_set) has the files
in place):

  distorted_inputs(data_dir, batch_size) -> tf.data.Dataset of training batches
      (images float32 [batch, 24, 24, 3], labels int32 [batch]) with the
      tutorial's random crop, flip, brightness, contrast and standardization.
  inputs(eval_data, data_dir, batch_size) -> tf.data.Dataset of evaluation
      batches: central 24x24 crop and standardization, every example once.

Each takes data_set= (a dataset.DataSet, data_sets.CIFAR10 by default): the
records are read in its layout, and the crops keep the tutorial's share of
the image (crop_size: 24 of 32); and augmentation= (an Augmentation:
TUTORIAL, or another that a model module declares, e.g. ResNet-20's).
  image_summary(images, step)  writes a sample of a batch to TensorBoard.

Building blocks shared with other input paths (the whole data set on an
accelerator, see distort_images): decode_records, distort_images,
central_crop_and_standardize, load_records.

Every problem with the data is raised as errors.DataSetError with a
one-line message that names the file (or folder) and what is wrong.
"""

import collections
import os

import numpy as np
import tensorflow as tf

import data_sets
from cifar10_toolkit import dataset
from cifar10_toolkit import errors

IMAGE_SIZE = 24            # side of the crops fed to the network (of 32)

# How training images are distorted: crops of crop[0]/crop[1] of the side,
# after zero padding of pad pixels on each side; with colour, random
# brightness and contrast; standardized, or (False) left 0 to 255 for a model
# that normalizes them. A model module may declare its own (INPUT).
Augmentation = collections.namedtuple(
    'Augmentation', 'crop pad colour standardize', defaults=(True,))
TUTORIAL = Augmentation(crop=(IMAGE_SIZE, 32), pad=0, colour=True)
AUGMENTED = ('crop_size', 'distort_images', 'central_crop_and_standardize',
             'distorted_inputs', 'inputs')  # the functions that take one


def crop_size(side, augmentation=TUTORIAL):
  """The side of the crops of a side x side image (the tutorial's 24 of 32)."""
  num, den = augmentation.crop
  return side * num // den

# Training distortions (docs/model.md): random crop, flip, brightness, contrast.
MAX_BRIGHTNESS_DELTA = 63.0
CONTRAST_RANGE = (0.2, 1.8)
# The tutorial's shuffling queue held 40% of an epoch (20,000 images); here
# each epoch is a permutation of all of it (training_index_batches).


# --------------------------------------------------------------------------
# Decoding and distorting batches (pure TensorFlow, usable on any device)
# --------------------------------------------------------------------------

def decode_records(records, data_set=data_sets.CIFAR10):
  """Splits raw records into images and labels.

  Args:
    records: uint8 [batch, record bytes]: header bytes (the label one of
      them), then the image's planes (CIFAR-10: a label byte, then the red,
      green and blue planes of a 32x32 image, each row by row).
    data_set: the DataSet whose layout the records have.

  Returns:
    images: uint8 [batch, height, width, channels]; labels: int32 [batch].
  """
  height, width, channels = data_set.image_shape
  labels = tf.cast(records[:, data_set.label_byte], tf.int32)
  planes = tf.reshape(records[:, data_set.label_bytes:data_set.record_bytes],
                      [-1, channels, height, width])
  return tf.transpose(planes, [0, 2, 3, 1]), labels


def standardize(images):
  """tf.image.per_image_standardization, for a batch of float32 images."""
  mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
  std = tf.math.reduce_std(images, axis=[1, 2, 3], keepdims=True)
  num_elements = tf.cast(tf.reduce_prod(tf.shape(images)[1:]), images.dtype)
  return (images - mean) / tf.maximum(std, tf.math.rsqrt(num_elements))


def distortion_draws(seed, num, positions=9):
  """The random parameters of distort_images for num images.

  All are made from one draw of Philox bits (random_bits), so that they are
  the same in TensorFlow's kernels and in XLA, and cheap: one key scramble
  per batch.

  Args:
    seed: int [2] stateless seed.
    num: number of images.
    positions: where a crop may start along a side (9: 24 of 32).

  Returns:
    dict: offsets int32 [num, 2] (crop row and column, uniform in 0..8), flip
    bool [num, 1, 1, 1] (probability 1/2), brightness float32 [num, 1, 1, 1]
    (uniform in [-63, 63)), contrast float32 [num, 1, 1, 1] (uniform in
    [0.2, 1.8)).
  """
  bits = random_bits([5, num], seed)
  one = [num, 1, 1, 1]
  low, high = CONTRAST_RANGE
  return {
      'offsets': tf.transpose(tf.cast(bits[:2] % positions, tf.int32)),
      'flip': tf.reshape(unit_floats(bits[2]) < 0.5, one),
      'brightness': tf.reshape(
          unit_floats(bits[3]) * (2 * MAX_BRIGHTNESS_DELTA) -
          MAX_BRIGHTNESS_DELTA, one),
      'contrast': tf.reshape(unit_floats(bits[4]) * (high - low) + low, one),
  }


def random_bits(shape, seed):
  """uint32 Philox bits from a stateless seed, the same in XLA.

  The algorithm is named: left to choose ('auto_select'), XLA scrambles a
  negative seed into another key than TensorFlow's kernels do.
  """
  return tf.random.stateless_uniform(shape, seed, None, None, tf.uint32,
                                     alg='philox')


def unit_floats(bits):
  """Floats in [0, 1) from uint32 bits, as TensorFlow's kernels make them
  (the low 23 bits as the mantissa); XLA makes its floats otherwise, so a
  step compiled by XLA would see other crops and another order."""
  mantissa = tf.bitwise.bitwise_and(bits, 0x7fffff)
  return tf.cast(mantissa, tf.float32) * (1.0 / (1 << 23))


def uniform(shape, seed, minval=0.0, maxval=1.0):
  """tf.random.stateless_uniform's float32 values (Philox), the same under
  XLA (random_bits, unit_floats).

  Args:
    shape: of the result.
    seed: int [2] stateless seed.
    minval, maxval: the range [minval, maxval).

  Returns:
    float32 tensor of shape.
  """
  return unit_floats(random_bits(shape, seed)) * (maxval - minval) + minval


def distort_images(images, seed, draws_for=None, offset=0,
                   augmentation=TUTORIAL):
  """The tutorial's training distortions, applied to a whole batch at once.

  Per image, in this order (each as augmentation says): random 24x24 crop
  (crop_size of the side), random left-right flip, random brightness (delta
  uniform in [-63, 63)), random contrast (factor uniform in [0.2, 1.8)),
  per-image standardization: the distributions of tf.image's random_crop,
  random_flip_left_right, random_brightness, random_contrast and
  per_image_standardization. Randomness is stateless: the same seed gives the
  same batch on any device.

  Args:
    images: uint8 or float [batch, side, side, channels].
    seed: int [2] stateless seed.
    draws_for: optional size of the global batch the random draws are made
      for (default: this batch); images then are its rows
      [offset, offset + batch), so a replica's slice of a global batch is
      distorted exactly as the global batch would be on one device.
    offset: see draws_for.
    augmentation: the crop's share, the padding, whether brightness and
      contrast change, whether images are standardized (TUTORIAL: 24 of
      32, none, they do, they are).

  Returns:
    float32 [batch, crop, crop, channels].
  """
  n = tf.shape(images)[0]
  side = images.shape[1]
  crop = crop_size(side, augmentation)
  pad = augmentation.pad
  if pad:
    images = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  d = distortion_draws(seed, n if draws_for is None else draws_for,
                       side + 2 * pad - crop + 1)
  d = {k: v[offset:offset + n] for k, v in d.items()}
  window = tf.range(crop)
  # the crop's columns, read right to left in a flipped image (the flip is
  # part of the gather: no second pass)
  columns = tf.where(d['flip'][:, :, 0, 0], crop - 1 - window, window)
  # (float32 before the gathers: a GPU has no uint8 gather kernel)
  x = tf.cast(images, tf.float32)
  x = tf.gather(x, d['offsets'][:, :1] + window, axis=1, batch_dims=1)
  x = tf.gather(x, d['offsets'][:, 1:] + columns, axis=2, batch_dims=1)
  if augmentation.colour:
    x += d['brightness']
    channel_mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    x = (x - channel_mean) * d['contrast'] + channel_mean
  return standardize(x) if augmentation.standardize else x


def central_crop_and_standardize(images, augmentation=TUTORIAL):
  """Evaluation preprocessing: central 24x24 crop (crop_size of the side),
  per-image standardization (unless augmentation.standardize is False)."""
  side = images.shape[1]
  size = crop_size(side, augmentation)
  start = (side - size) // 2
  crop = tf.cast(images[:, start:start + size, start:start + size, :],
                 tf.float32)
  return standardize(crop) if augmentation.standardize else crop


# --------------------------------------------------------------------------
# tf.data pipelines
# --------------------------------------------------------------------------

def training_files(data_dir, data_set=data_sets.CIFAR10):
  """The paths of the training files, each checked."""
  return _filenames(False, data_dir, data_set)


def _filenames(eval_data, data_dir, data_set):
  batches_dir = os.path.join(data_dir, data_set.folder)
  names = data_set.test_files if eval_data else data_set.train_files
  paths = [os.path.join(batches_dir, n) for n in names]
  for p in paths:
    dataset.check_bin_file(p, data_set)
  return paths


def check_batch_size(batch_size):
  """Raises ValueError unless batch_size is a positive integer."""
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError('batch_size must be a positive integer, got %r' %
                     (batch_size,))


def load_records(filenames, data_set=data_sets.CIFAR10):
  """Reads fixed-length records into one uint8 [N, record bytes] tensor in
  memory.

  Reading goes through tf.data.FixedLengthRecordDataset, file after file, so
  row i is the i-th record of the files in the order given.
  """
  ds = tf.data.FixedLengthRecordDataset(filenames, data_set.record_bytes,
                                        buffer_size=1 << 20)
  ds = ds.batch(10000).map(lambda r: tf.io.decode_raw(r, tf.uint8))
  ds = ds.unbatch()
  count = sum(
      os.path.getsize(f) // data_set.record_bytes for f in filenames)
  return ds.batch(count).get_single_element()


def epoch_permutation(num_examples, seed, epoch):
  """The shuffled order of one epoch: a pure function of (seed, epoch)."""
  keys = uniform([num_examples], tf.stack([tf.cast(seed, tf.int64),
                                          tf.cast(epoch, tf.int64)]))
  return tf.argsort(keys, stable=True)


def training_index_batches(num_examples, global_batch_size, seed,
                           start_step=0):
  """(step, example indices) of every training step from start_step on.

  Each epoch is a fresh permutation of the whole training set (the shuffle
  draws from all 50,000 examples, more than the tutorial's 20,000), walked
  front to back; a batch may straddle two epochs, so every example is used
  exactly once per epoch. Resuming at start_step yields exactly the batches
  an uninterrupted run would have used.
  """
  start = start_step * global_batch_size
  first_epoch = start // num_examples
  ds = tf.data.Dataset.counter(first_epoch)
  ds = ds.map(lambda e: epoch_permutation(num_examples, seed, e))
  ds = ds.unbatch().skip(start - first_epoch * num_examples)
  ds = ds.batch(global_batch_size, drop_remainder=True)
  return ds.enumerate(start=start_step)


def distorted_inputs(data_dir, batch_size, seed=None, start_step=0,
                     input_context=None, data_set=data_sets.CIFAR10,
                     augmentation=TUTORIAL):
  """Distorted training input for CIFAR-10 training, as a tf.data.Dataset.

  The training files are read once with FixedLengthRecordDataset into a
  uint8 tensor (150 MB for CIFAR-10); each step gathers its examples by a
  per-epoch permutation, then decodes and distorts the batch (distort_images) in
  parallel map calls; batches are prefetched. With a seed, the pipeline is a
  pure function of (seed, step): the same batches every run, and a run
  resumed at start_step continues exactly where it stopped.

  Args:
    data_dir: folder holding the extracted data set (data_set.folder).
    batch_size: examples per batch (per replica when input_context is given).
    seed: optional int; None draws a random one.
    start_step: the global step of the first batch (to resume a run).
    input_context: optional tf.distribute.InputContext. A step then takes
      batch_size x replicas examples, the ones a single device would take with
      that batch size, and this pipeline yields, step after step, the slices
      of its own replicas in turn (what distribute_datasets_from_function
      expects).
    data_set: the DataSet (its layout and files).
    augmentation: the distortions (distort_images).

  Returns:
    Dataset of (images float32 [batch_size, 24, 24, 3], labels int32
    [batch_size]), endless.

  Raises:
    ValueError: batch_size is not a positive integer (a bug: flags check it).
    errors.DataSetError: the global batch exceeds the
      training set.
    errors.DataSetError: a training file is missing or malformed.
  """
  check_batch_size(batch_size)
  records = load_records(_filenames(False, data_dir, data_set), data_set)
  if seed is None:
    seed = int(np.random.randint(0, 2**31 - 1))
  replicas, local, first = 1, 1, 0
  if input_context is not None:
    replicas = input_context.num_replicas_in_sync
    local = replicas // input_context.num_input_pipelines
    first = input_context.input_pipeline_id * local
  global_batch = batch_size * replicas
  num_examples = int(records.shape[0])
  if global_batch > num_examples:
    raise errors.DataSetError(
        'batch_size %d x %d replicas exceeds the %d training '
        'examples in %s' % (batch_size, replicas, num_examples, data_dir))
  lo = first * batch_size
  size = local * batch_size

  def make_batches(step, indices):
    # The random draws are made for the whole global batch and sliced, so the
    # examples and distortions do not depend on the number of replicas.
    images, labels = decode_records(
        tf.gather(records, indices[lo:lo + size]), data_set)
    seeds = tf.stack([tf.cast(seed, tf.int64), step])
    images = distort_images(images, seeds, global_batch, lo, augmentation)
    return (tf.reshape(images, [local, batch_size] + images.shape[1:]),
            tf.reshape(labels, [local, batch_size]))

  ds = training_index_batches(num_examples, global_batch, seed, start_step)
  ds = ds.map(make_batches, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  return ds.unbatch().prefetch(tf.data.AUTOTUNE)


def inputs(eval_data, data_dir, batch_size, drop_remainder=False,
           data_set=data_sets.CIFAR10, augmentation=TUTORIAL):
  """Evaluation input: central crop, standardization, each example once.

  Args:
    eval_data: True for the test set, False for the training set.
    data_dir: folder holding the extracted data set (data_set.folder).
    batch_size: examples per batch; the last batch is smaller unless
      drop_remainder.
    drop_remainder: drop a last, partial batch.
    data_set: the DataSet; augmentation: its crop (TUTORIAL: 24 of 32).

  Returns:
    Dataset of (images float32 [batch, 24, 24, 3], labels int32 [batch]).
  """
  check_batch_size(batch_size)
  ds = tf.data.FixedLengthRecordDataset(
      _filenames(eval_data, data_dir, data_set), data_set.record_bytes)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)

  def preprocess(raw):
    images, labels = decode_records(tf.io.decode_raw(raw, tf.uint8),
                                    data_set)
    return central_crop_and_standardize(images, augmentation), labels

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def image_summary(images, step, name='images', max_outputs=10):
  """Writes a sample of a batch of (standardized) images to TensorBoard.

  Each image is rescaled to [0, 1] by its own minimum and maximum. Call with a
  default tf.summary writer set.

  Args:
    images: float [batch, height, width, 3].
    step: the global step to write at.
    name: the summary tag.
    max_outputs: how many images to write.
  """
  images = tf.convert_to_tensor(images[:max_outputs], tf.float32)
  lo = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
  hi = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
  tf.summary.image(name, (images - lo) / tf.maximum(hi - lo, 1e-6), step=step,
                   max_outputs=max_outputs)
