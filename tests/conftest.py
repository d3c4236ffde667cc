"""Shared fixtures: tiny CIFAR-10 data sets written in the exact official formats."""

import glob
import os
import pickle
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that the tests run real two-replica training;
# this must happen before TensorFlow initialises its devices.
LOGICAL_CPUS = 2
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS)

# Where the tests find the real data set (cifar-10-binary.tar.gz), first found
# first: the archive that $CIFAR10_DATA_SOURCE names, as the README sets it up
# (a local path; a URL is not fetched by tests), then a copy in a cifar10/
# folder of any folder beside the clone (where a machine without internet
# keeps its data).
ARCHIVE = 'cifar-10-binary.tar.gz'


def real_archive():
  """The path of the real data set's archive, or None where there is none."""
  beside = sorted(glob.glob(os.path.join(os.path.dirname(ROOT), '*',
                                         'cifar10', ARCHIVE)))
  for path in [os.environ.get('CIFAR10_DATA_SOURCE')] + beside:
    if path and '://' not in path and os.path.isfile(os.path.expanduser(path)):
      return os.path.expanduser(path)
  return None


CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
           'horse', 'ship', 'truck']


def make_arrays(num, seed):
  """num random images (uint8 [num, 3072], plane order) and labels 0-9."""
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (num, 3072), dtype=np.uint8),
          (np.arange(num) % 10).astype(np.uint8)[rng.permutation(num)])


def write_bin(folder, per_file=100, test_num=None, seed=0):
  """Writes cifar-10-batches-bin/ under folder; returns {name: (data, labels)}."""
  out = os.path.join(folder, 'cifar-10-batches-bin')
  os.makedirs(out, exist_ok=True)
  files = {}
  names = ['data_batch_%d.bin' % i for i in range(1, 6)] + ['test_batch.bin']
  for i, name in enumerate(names):
    n = (test_num or per_file) if name == 'test_batch.bin' else per_file
    data, labels = make_arrays(n, seed * 100 + i)
    np.concatenate([labels[:, None], data], axis=1).tofile(
        os.path.join(out, name))
    files[name] = (data, labels)
  with open(os.path.join(out, 'batches.meta.txt'), 'w') as f:
    f.write('\n'.join(CLASSES) + '\n\n')
  return files


def write_py(folder, per_file=100, seed=0):
  """Writes cifar-10-batches-py/ as Python 2 would (bytes keys, protocol 2)."""
  out = os.path.join(folder, 'cifar-10-batches-py')
  os.makedirs(out, exist_ok=True)
  files = {}
  names = ['data_batch_%d' % i for i in range(1, 6)] + ['test_batch']
  for i, name in enumerate(names):
    data, labels = make_arrays(per_file, seed * 100 + i)
    d = {b'batch_label': b'batch', b'labels': [int(x) for x in labels],
         b'data': data, b'filenames': [b'f%d.png' % j for j in range(per_file)]}
    with open(os.path.join(out, name), 'wb') as f:
      pickle.dump(d, f, protocol=2)
    files[name] = (data, labels)
  with open(os.path.join(out, 'batches.meta'), 'wb') as f:
    pickle.dump({b'label_names': [c.encode() for c in CLASSES],
                 b'num_cases_per_batch': per_file, b'num_vis': 3072}, f,
                protocol=2)
  return files


@pytest.fixture
def bin_dir(tmp_path):
  """A data_dir holding a tiny binary data set (5 x 100 train, 100 test)."""
  write_bin(str(tmp_path))
  return str(tmp_path)


@pytest.fixture(scope='session')
def shared_bin_dir(tmp_path_factory):
  """A session-wide tiny binary data set (5 x 200 train, 200 test)."""
  d = str(tmp_path_factory.mktemp('cifar_small'))
  write_bin(d, per_file=200)
  return d


@pytest.fixture(scope='session')
def real_data_dir(tmp_path_factory):
  """The real data set (real_archive()), extracted once; skips if absent."""
  archive = real_archive()
  if archive is None:
    pytest.skip('real data set not found: set CIFAR10_DATA_SOURCE to the '
                'path of cifar-10-binary.tar.gz')
  import cifar10_data
  d = str(tmp_path_factory.mktemp('cifar_real'))
  cifar10_data.maybe_download_and_extract(d, archive)
  return d
