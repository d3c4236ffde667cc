"""The training set on the compute device, each batch made inside the graph.

  feed = DeviceInput(data_dir, batch_size, seed, data_set, input_lib)
  feed, iterator = make_feed(...)      either feed, as a training run has it
  batch = feed.next_batch(step)          cross-replica: records, indices, step
  images, labels = feed.replica_batch(batch)   in replica context

With one replica both run in replica context, inside the replica's step
(train_loop.make_train_loop), so that XLA can compile the whole step.
DatasetFeed gives the tf.data path (the input library's distorted_inputs)
the same interface. The input library is the one a run is given
(cifar10_input.py, the tutorial's).

The batches equal input_lib.distorted_inputs' (same seed and step), and
every op has a GPU kernel (tools/gpu_audit.py): the records are kept as 32-bit
words (to_words, from_words), as a GPU has no uint8 gather; load_words reads
the files straight into that form.
"""

import os

import numpy as np
import tensorflow as tf

from cifar10_toolkit import errors


class DeviceInput:
  """distorted_inputs with the data set on the compute device, in the graph.

  The training records (150 MB, as int32 words) are placed once on every
  replica's device, and each step's batch is made inside the training function
  from (seed, step): the same epoch permutation, gather, decode and
  distort_images as distorted_inputs (cifar10_input), so the batches are
  identical to the tf.data path's, on one replica or several (each replica
  takes its own slice of the global batch). Nothing runs on the host between
  steps, so a training loop of many steps is one graph with no tf.data in it.

  The permutations cost an argsort of 50,000 keys each (5 ms on a CPU), so
  they are not recomputed per step or per call: the permutations of the
  current epoch and the next (a batch may straddle the two) are kept in
  variables beside the records and recomputed, inside the graph, only when a
  step enters a new epoch.

  Use, in cross-replica context inside a tf.function:
    batch = feed.next_batch(step)                    # then, on each replica:
    images, labels = feed.replica_batch(batch)
  """

  def __init__(self, data_dir, batch_size, seed, data_set, input_lib,
               strategy=None, records=None):
    """Loads the training records onto the devices.

    Args:
      data_dir: folder holding the extracted data set.
      batch_size: examples per replica.
      seed: int seed of the run (the one given to distorted_inputs).
      data_set: the DataSet.
      input_lib: the input library (cifar10_input): its training_files,
        epoch_permutation, decode_records and distort_images make the
        batches.
      strategy: the tf.distribute strategy (default: the current one).
      records: optional uint8 [N, record bytes] records to use instead of
        reading data_dir's (e.g. to trace the training functions,
        tools/gpu_audit.py).

    Raises:
      ValueError, errors.DataSetError: as distorted_inputs.
    """
    self.input_lib = input_lib
    input_lib.check_batch_size(batch_size)
    strategy = strategy or tf.distribute.get_strategy()
    self.data_set = data_set
    record = data_set.record_bytes
    if records is None:
      words = load_words(input_lib.training_files(data_dir, data_set),
                         record)
    else:
      words = to_words(records, record)
    self.num_examples = int(words.shape[0])
    self.batch_size = batch_size
    self.global_batch = batch_size * strategy.num_replicas_in_sync
    if self.global_batch > self.num_examples:
      raise errors.DataSetError(
          'batch_size %d x %d replicas exceeds the %d training '
          'examples in %s' % (batch_size, strategy.num_replicas_in_sync,
                              self.num_examples, data_dir))
    self.seed = tf.constant(seed, tf.int64)
    # One copy on each replica's device (a PerReplica value, fed to
    # strategy.run), as 32-bit words: a GPU has gather kernels for int32
    # but none for uint8. Not a mirrored variable: MultiWorkerMirroredStrategy
    # broadcasts variables' initial values with collectives that take no uint8.
    self.records = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.identity(words))
    # The permutation cache (plain variables: only the step that makes the
    # global batch reads them: the host-side step with several replicas,
    # the replica itself with one).
    self._epoch = tf.Variable(tf.constant(-1, tf.int64), trainable=False,
                              name='cached_epoch')
    self._perms = tf.Variable(tf.zeros([2 * self.num_examples], tf.int32),
                              trainable=False, name='cached_permutations')

  def _permutations(self, epoch):
    return tf.concat([
        self.input_lib.epoch_permutation(self.num_examples, self.seed, epoch),
        self.input_lib.epoch_permutation(self.num_examples, self.seed,
                                         epoch + 1)], 0)

  def next_batch(self, step, iterator=None):
    """The global batch of a step: (records, example indices, step).

    iterator is unused (the tf.data feed's next_batch takes one)."""
    step = tf.cast(step, tf.int64)
    first = step * self.global_batch
    epoch = first // self.num_examples

    def refresh():
      self._perms.assign(self._permutations(epoch))
      self._epoch.assign(epoch)
      return tf.constant(True)
    with tf.control_dependencies([tf.cond(
        tf.equal(self._epoch, epoch), lambda: tf.constant(False), refresh)]):
      offset = first - epoch * self.num_examples
      # (a gather, not a slice: XLA would compile a slice with a moving
      # start anew for every step; of the value: a GPU has no int32
      # ResourceGather kernel)
      indices = tf.gather(self._perms.value(), offset + tf.range(
          self.global_batch, dtype=tf.int64))
    return self.records, indices, step

  def replica_batch(self, batch, slices=1):
    """This replica's (images float32, labels int32), in replica context.

    slices: make the batch as this many independent slices, joined (the
    same values; with single-threaded kernels the slices are made side by
    side, see convnet.inference)."""
    records, indices, step = batch
    ctx = tf.distribute.get_replica_context()
    lo = ctx.replica_id_in_sync_group * self.batch_size
    size = self.batch_size // slices
    parts = []
    for k in range(slices):
      start = lo + k * size
      images, labels = self.input_lib.decode_records(from_words(tf.gather(
          records, indices[start:start + size]), self.data_set.record_bytes),
                                                     self.data_set)
      parts.append((self.input_lib.distort_images(
          images, tf.stack([self.seed, step]), self.global_batch, start),
                    labels))
    if slices == 1:
      return parts[0]
    return tuple(tf.concat(p, 0) for p in zip(*parts))


_WORD = 4  # bytes


def to_words(records, record_bytes):
  """uint8 [N, record_bytes] records as int32 words (zero-padded; CIFAR-10:
  [N, 3073] as [N, 769])."""
  pad = -record_bytes % _WORD
  padded = tf.pad(records, [[0, 0], [0, pad]])
  words = (record_bytes + pad) // _WORD
  return tf.bitcast(tf.reshape(padded, [-1, words, _WORD]), tf.int32)


def load_words(filenames, record_bytes, chunk=1000):
  """to_words(input_lib.load_records(filenames), record_bytes), read
  with less memory.

  The files are read, chunk records at a time, into one zero-padded NumPy
  buffer that the returned tensor shares (DLPack, no copy): the training
  set is in memory once while it loads, where load_records and to_words
  hold it three times over (about 300 MB more at the peak).

  Args:
    filenames: fixed-length record files, in order (checked by the caller).
    record_bytes: the size of a record.
    chunk: records read at a time.

  Returns:
    int32 [N, words] words on the host.

  Raises:
    errors.DataSetError: a file shorter than when it was checked.
  """
  counts = [os.path.getsize(f) // record_bytes for f in filenames]
  pad = -record_bytes % _WORD
  buf = _aligned_zeros([sum(counts), record_bytes + pad])
  row = 0
  for path, count in zip(filenames, counts):
    with open(path, 'rb') as f:
      for start in range(0, count, chunk):
        n = min(chunk, count - start)
        data = f.read(n * record_bytes)
        if len(data) != n * record_bytes:
          raise errors.DataSetError(
              '%s ended at byte %d while it was read (it had %d records '
              'when checked)' % (path, start * record_bytes + len(data),
                                 count))
        buf[row:row + n, :record_bytes] = np.frombuffer(
            data, np.uint8).reshape(n, record_bytes)
        row += n
  return tf.experimental.dlpack.from_dlpack(buf.view(np.int32).__dlpack__())


def _aligned_zeros(shape, alignment=64):
  """A zeroed uint8 array whose data starts on an `alignment`-byte boundary
  (TensorFlow's own buffers are 64-byte aligned; XLA's programs rely on it,
  and malloc gives 16)."""
  size = int(np.prod(shape))
  raw = np.zeros(size + alignment, np.uint8)
  start = -raw.ctypes.data % alignment
  return raw[start:start + size].reshape(shape)


def from_words(words, record_bytes):
  """to_words undone: int32 [N, words] -> uint8 [N, record_bytes]."""
  return tf.reshape(tf.bitcast(words, tf.uint8), [tf.shape(words)[0], -1]
                    )[:, :record_bytes]


def make_feed(data_dir, batch_size, seed, strategy, on_device, data_set,
              input_lib, start_step=0):
  """(feed, iterator) of a training run: a DeviceInput and None when
  on_device, else a DatasetFeed and the distributed iterator of
  input_lib.distorted_inputs from start_step."""
  if on_device:
    return DeviceInput(data_dir, batch_size, seed, data_set, input_lib,
                       strategy), None
  return DatasetFeed(), iter(strategy.distribute_datasets_from_function(
      lambda ctx: input_lib.distorted_inputs(
          data_dir, batch_size, seed, start_step, ctx, data_set)))


class DatasetFeed:
  """Batches from a distributed tf.data iterator (the --data_on_device=false
  path), with the interface of DeviceInput."""

  def next_batch(self, step, iterator):
    return next(iterator)

  def replica_batch(self, batch, slices=1):
    return batch
