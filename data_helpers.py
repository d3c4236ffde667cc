"""The whole CIFAR-10 data set in NumPy, for the fully connected model.

Functions, in the order run_fc_model.py chains them:

  load_data(data_dir)  -> dict of images_train, labels_train, images_test,
      labels_test, classes; reads whichever official format data_dir holds
      (cifar-10-batches-py pickles or cifar-10-batches-bin records) and
      subtracts the mean training image from both sets. With data_set=
      (a dataset.DataSet: --dataset), another data set's record files.
  reshape_data(data_dict) -> the same dict with images N x 32 x 32 x 3.
  gen_batch(data, batch_size, num_iter) -> shuffled batches, every example
      exactly once per epoch.

Images are float32 (not float64), filled file by file with no second copy, so
load_data adds about 0.75 GB to a process rather than several. Errors are
errors.DataSetError with a message naming the file and what is wrong.
"""

import os
import pickle

import numpy as np

import dataclasses

from data_sets import CIFAR10
from cifar10_toolkit.dataset import check_bin_file, check_record_counts
from cifar10_toolkit.errors import DataSetError

# CIFAR-10's two official formats (data_sets.CIFAR10 describes the binary
# one; the Python one has the same batches as pickles).
BATCHES_DIR, CLASS_NAMES = CIFAR10.folder, CIFAR10.class_names
TRAIN_FILES, (TEST_FILE,) = CIFAR10.train_files, CIFAR10.test_files
IMAGE_BYTES, NUM_CLASSES = CIFAR10.image_bytes, CIFAR10.num_classes
RECORD_BYTES, RECORDS_PER_FILE = CIFAR10.record_bytes, CIFAR10.file_records(
    TEST_FILE)
PY_BATCHES_DIR = 'cifar-10-batches-py'
PY_TRAIN_FILES = tuple('data_batch_%d' % i for i in range(1, 6))
PY_TEST_FILE = 'test_batch'


def _str_keys(d):
  return {(k.decode('latin1') if isinstance(k, bytes) else k): v
          for k, v in d.items()}


# What the official pickles hold besides dicts, lists, strings, bytes and
# numbers: NumPy arrays, rebuilt through NumPy's own functions and dtypes;
# and _codecs.encode, through which Python 3 writes bytes in protocol 2 (it
# turns a string into bytes and runs nothing else).
SAFE_GLOBALS = frozenset([
    ('_codecs', 'encode'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
])


# The largest array a pickle may declare: an official batch's data is
# 10,000 x 3,072 bytes. A pickle that calls numpy.ndarray(shape) itself asks
# for memory it does not hold; it is refused by size before any is taken.
MAX_ARRAY_BYTES = 2 * RECORDS_PER_FILE * IMAGE_BYTES


class RefusedGlobal(Exception):
  """A pickle asked for a class or function outside SAFE_GLOBALS."""


class RefusedSize(Exception):
  """A pickle declared an array larger than MAX_ARRAY_BYTES."""


class _BoundedArray(np.ndarray):
  """numpy.ndarray as a pickle may call it: no larger than MAX_ARRAY_BYTES."""

  def __new__(cls, shape, dtype=float, *args, **kwargs):
    size = np.dtype(dtype).itemsize
    for n in (shape if isinstance(shape, (tuple, list)) else (shape,)):
      size *= max(int(n), 0)
    if size > MAX_ARRAY_BYTES:
      raise RefusedSize('an array of %s (%d bytes)' % (tuple(shape)
                        if isinstance(shape, (tuple, list)) else shape, size))
    return np.ndarray(shape, dtype, *args, **kwargs)


class _SafeUnpickler(pickle.Unpickler):
  """Admits only SAFE_GLOBALS: a crafted file cannot run code, nor take
  more memory than an official file needs."""

  def find_class(self, module, name):
    if (module, name) == ('numpy', 'ndarray'):
      return _BoundedArray
    if (module, name) in SAFE_GLOBALS:
      return super().find_class(module, name)
    raise RefusedGlobal('%s.%s' % (module, name))


def _unpickle(path):
  if os.path.exists(path) and not os.path.isfile(path):  # a FIFO: no wait
    raise DataSetError('%s: not a regular file' % path)
  try:
    with open(path, 'rb') as f:
      # Python 2 pickles, any key type
      d = _SafeUnpickler(f, encoding='bytes').load()
  except FileNotFoundError:
    raise DataSetError('%s: missing' % path)
  except RefusedGlobal as e:
    raise DataSetError('%s: refused, it asks for %s, which no CIFAR-10 file '
                       'holds (only dicts, lists, strings, numbers and NumPy '
                       'arrays are loaded)' % (path, e))
  except RefusedSize as e:
    raise DataSetError('%s: refused, it declares %s, more than a CIFAR-10 '
                       'file holds (%d bytes of pixels)' % (
                           path, e, RECORDS_PER_FILE * IMAGE_BYTES))
  except Exception as e:  # pickle raises many types on corrupt input
    raise DataSetError('%s: not a readable pickle (%s)' % (path, e))
  if not isinstance(d, dict):
    raise DataSetError('%s: holds a %s, expected a dict' %
                       (path, type(d).__name__))
  return _str_keys(d)


def _read_pickle_batch(path):
  """Returns (uint8 [N, 3072], int32 [N]) from one Python-version batch."""
  d = _unpickle(path)
  for key in ('data', 'labels'):
    if key not in d:
      raise DataSetError("%s: no '%s' entry (keys: %s)" %
                         (path, key, ', '.join(sorted(map(str, d)))))
  data = d['data']
  if not isinstance(data, np.ndarray) or data.ndim != 2 or \
      data.shape[1] != IMAGE_BYTES or data.dtype != np.uint8:
    raise DataSetError("%s: 'data' is %s, expected a uint8 array of N x %d" % (
        path, '%s %s' % (data.dtype, data.shape) if isinstance(
            data, np.ndarray) else 'a %s' % type(data).__name__, IMAGE_BYTES))
  data = np.asarray(data)  # a plain ndarray
  raw = d['labels']
  if not isinstance(raw, (list, tuple, np.ndarray)):
    raise DataSetError("%s: 'labels' is a %s, expected a list of %d integers"
                       % (path, type(raw).__name__, data.shape[0]))
  # Flat and no longer than the images, before NumPy builds anything: a
  # few kilobytes of pickle can nest shared lists into gigabytes, or go
  # millions deep
  if len(raw) != data.shape[0]:
    raise DataSetError("%s: %d labels for %d images" %
                       (path, len(raw), data.shape[0]))
  if isinstance(raw, (list, tuple)) and any(
      isinstance(x, (list, tuple, dict, np.ndarray)) for x in raw):
    raise DataSetError("%s: 'labels' is nested (lists inside the list), "
                       "expected a flat list of %d integers" % (
                           path, data.shape[0]))
  labels = np.asarray(raw)
  if labels.dtype.kind not in 'iu':  # floats (NaN among them), bools, None
    raise DataSetError("%s: 'labels' holds %s values, expected integers 0-9"
                       % (path, 'mixed' if labels.dtype == object else
                          labels.dtype.name))
  if labels.shape != (data.shape[0],):
    raise DataSetError("%s: %d labels for %d images" %
                       (path, labels.size, data.shape[0]))
  _check_labels(path, labels)
  return data, labels.astype(np.int32)


def _check_labels(path, labels):
  bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
  if bad.size:
    raise DataSetError('%s: record %d has label %d, expected 0-9' %
                       (path, bad[0], labels[bad[0]]))


def _read_bin_batch(path, data_set=CIFAR10):
  """Returns (uint8 [N, image bytes], int32 [N]) from one record file of
  data_set (CIFAR-10: a binary-version batch, [N, 3072])."""
  check_bin_file(path, data_set)
  raw = np.fromfile(path, dtype=np.uint8).reshape(-1, data_set.record_bytes)
  return (raw[:, data_set.label_bytes:],
          raw[:, data_set.label_byte].astype(np.int32))


def _classes(folder):
  meta = os.path.join(folder, 'batches.meta')
  if os.path.isfile(meta):
    names = _unpickle(meta).get('label_names')
    if names:
      return [n.decode('latin1') if isinstance(n, bytes) else n for n in names]
  meta_txt = os.path.join(folder, 'batches.meta.txt')
  if os.path.isfile(meta_txt):
    with open(meta_txt) as f:
      names = [line.strip() for line in f if line.strip()]
    if len(names) == NUM_CLASSES:
      return names
  return list(CLASS_NAMES)


def find_format(data_dir, data_set=CIFAR10):
  """Which official format data_dir holds.

  Args:
    data_dir: a folder holding cifar-10-batches-py or cifar-10-batches-bin, or
      one of those folders itself.
    data_set: another data set than CIFAR-10: its record files
      (data_set.folder) are read.

  Returns:
    (folder, reader, train file names, test file name).

  Raises:
    DataSetError: neither format is there.
  """
  if data_set != CIFAR10:
    folder = os.path.join(data_dir, data_set.folder)
    if not os.path.isfile(os.path.join(folder, data_set.train_files[0])):
      raise DataSetError('data_dir %s: holds no %s/' % (data_dir,
                                                        data_set.folder))
    return (folder, lambda path: _read_bin_batch(path, data_set),
            data_set.train_files, data_set.test_files[0])
  candidates = [(os.path.join(data_dir, PY_BATCHES_DIR), 'py'),
                (os.path.join(data_dir, BATCHES_DIR), 'bin'),
                (data_dir, 'py'), (data_dir, 'bin')]
  for folder, kind in candidates:
    if kind == 'py' and os.path.isfile(os.path.join(folder,
                                                    PY_TRAIN_FILES[0])):
      return folder, _read_pickle_batch, PY_TRAIN_FILES, PY_TEST_FILE
    if kind == 'bin' and os.path.isfile(os.path.join(folder, TRAIN_FILES[0])):
      return folder, _read_bin_batch, TRAIN_FILES, TEST_FILE
  raise DataSetError('data_dir %s: holds neither %s/ nor %s/' %
                     (data_dir, PY_BATCHES_DIR, BATCHES_DIR))


def _read_set(folder, reader, names, counts):
  """Reads batch files into one float32 [N, image bytes] array, file by
  file; counts[name] gets the records of each."""
  images, labels = None, []
  row = 0
  for name in names:
    data, lab = reader(os.path.join(folder, name))
    counts[name] = len(data)
    if images is None:  # size the array from the first file: all are alike
      images = np.empty((len(data) * len(names), data.shape[1]), np.float32)
    if row + len(data) > len(images):
      images = np.concatenate([images[:row], np.empty(
          (len(data), data.shape[1]), np.float32)])
    images[row:row + len(data)] = data
    labels.append(lab)
    row += len(data)
  return images[:row], np.concatenate(labels)


def load_data(data_dir, data_set=CIFAR10):
  """Loads CIFAR-10 into memory, mean training image subtracted.

  Args:
    data_dir: folder holding cifar-10-batches-py or cifar-10-batches-bin (or
      either folder itself).
    data_set: another data set than CIFAR-10 (its record files; the
      sizes below are then its own).

  Returns:
    dict with images_train float32 [50000, 3072], labels_train int32 [50000],
    images_test float32 [10000, 3072], labels_test int32 [10000], classes
    (list of 10 names). Pixels keep the official plane order (1024 red, 1024
    green, 1024 blue values).

  Raises:
    DataSetError: no data set, or a malformed file (named in the message).
  """
  folder, reader, train_names, test_name = find_format(data_dir, data_set)
  counts = {}
  images_train, labels_train = _read_set(folder, reader, train_names, counts)
  images_test, labels_test = _read_set(folder, reader, (test_name,), counts)
  check_record_counts(folder, counts, dataclasses.replace(
      data_set, train_files=tuple(train_names), test_files=(test_name,)))
  mean = images_train.mean(axis=0, dtype=np.float64).astype(np.float32)
  images_train -= mean
  images_test -= mean
  return {
      'images_train': images_train,
      'labels_train': labels_train,
      'images_test': images_test,
      'labels_test': labels_test,
      'classes': (_classes(folder) if data_set == CIFAR10
                  else list(data_set.class_names)),
  }


def reshape_data(data_dict):
  """Reshapes the images of a load_data dict to N x 32 x 32 x 3.

  Args:
    data_dict: as returned by load_data (images N x 3072, plane order).

  Returns:
    A new dict, images float32 [N, 32, 32, 3] (row, column, channel).
  """
  out = dict(data_dict)
  for key in ('images_train', 'images_test'):
    out[key] = data_dict[key].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return out


def gen_batch(data, batch_size, num_iter, seed=None):
  """Yields num_iter shuffled batches, every example exactly once per epoch.

  The order is a random permutation of the examples, walked front to back and
  redrawn at each epoch; a batch that reaches the end of one epoch is filled
  from the next, so no example is skipped or repeated within an epoch.

  Args:
    data: an array, or a tuple/list of arrays of equal length (e.g. (images,
      labels)), indexed along the first axis.
    batch_size: examples per batch, at most the number of examples.
    num_iter: number of batches to yield.
    seed: optional seed of the shuffling.

  Yields:
    A batch (an array, or a tuple of arrays) of batch_size examples.

  Raises:
    ValueError: batch_size is not positive or exceeds the number of examples.
  """
  arrays = tuple(data) if isinstance(data, (tuple, list)) else (data,)
  n = len(arrays[0])
  if any(len(a) != n for a in arrays):
    raise ValueError('gen_batch: arrays of unequal lengths %s' %
                     [len(a) for a in arrays])
  if batch_size <= 0 or batch_size > n:
    raise ValueError('batch_size must be between 1 and the %d examples, got %r'
                     % (n, batch_size))
  rng = np.random.default_rng(seed)
  order = np.empty(0, np.int64)
  for _ in range(num_iter):
    if len(order) < batch_size:
      order = np.concatenate([order, rng.permutation(n)])
    idx, order = order[:batch_size], order[batch_size:]
    batch = tuple(a[idx] for a in arrays)
    yield batch if isinstance(data, (tuple, list)) else batch[0]
