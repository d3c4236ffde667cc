"""Tests of data_helpers: both official formats, normalisation, batching."""

import pickle

import numpy as np
import pytest

import data_helpers as dh
from cifar10_toolkit.errors import DataSetError
from conftest import CLASSES, write_bin, write_py


def _expected(files, train_names, test_name):
  train = np.concatenate([files[n][0] for n in train_names]).astype(np.float64)
  mean = train.mean(axis=0)
  test = files[test_name][0].astype(np.float64)
  return train - mean, test - mean


@pytest.mark.parametrize('fmt', ['py', 'bin'])
def test_load_data_both_formats(tmp_path, fmt):
  if fmt == 'py':
    files = write_py(str(tmp_path), per_file=60)
    train_names, test_name = dh.PY_TRAIN_FILES, dh.PY_TEST_FILE
  else:
    files = write_bin(str(tmp_path), per_file=60)
    train_names, test_name = ('data_batch_%d.bin' % i for i in range(1, 6)), \
        'test_batch.bin'
    train_names = tuple(train_names)
  d = dh.load_data(str(tmp_path))
  assert d['images_train'].shape == (300, 3072)
  assert d['images_test'].shape == (60, 3072)
  assert d['images_train'].dtype == np.float32
  assert d['images_test'].dtype == np.float32
  want_train, want_test = _expected(files, train_names, test_name)
  np.testing.assert_allclose(d['images_train'], want_train, atol=1e-3)
  np.testing.assert_allclose(d['images_test'], want_test, atol=1e-3)
  np.testing.assert_array_equal(
      d['labels_train'], np.concatenate([files[n][1] for n in train_names]))
  np.testing.assert_array_equal(d['labels_test'], files[test_name][1])
  assert d['classes'] == CLASSES
  np.testing.assert_allclose(d['images_train'].mean(axis=0), 0, atol=1e-3)


def test_load_data_accepts_the_batches_folder_itself(tmp_path):
  write_bin(str(tmp_path), per_file=20)
  d = dh.load_data(str(tmp_path / 'cifar-10-batches-bin'))
  assert d['images_train'].shape == (100, 3072)


def test_python3_pickles_with_str_keys(tmp_path):
  write_py(str(tmp_path), per_file=20)
  path = tmp_path / 'cifar-10-batches-py' / 'test_batch'
  d = pickle.load(open(path, 'rb'), encoding='bytes')
  d = {k.decode(): v for k, v in d.items()}
  pickle.dump(d, open(path, 'wb'))
  assert dh.load_data(str(tmp_path))['images_test'].shape == (20, 3072)


def test_reshape_data_pixel_order(tmp_path):
  files = write_py(str(tmp_path), per_file=20)
  d = dh.reshape_data(dh.load_data(str(tmp_path)))
  assert d['images_train'].shape == (100, 32, 32, 3)
  raw = files['data_batch_1'][0].astype(np.float64)
  mean = np.concatenate([files['data_batch_%d' % i][0] for i in range(1, 6)
                         ]).mean(axis=0)
  # pixel (row 2, col 5): red at 2*32+5, green 1024 later, blue 2048 later
  for ch in range(3):
    k = ch * 1024 + 2 * 32 + 5
    np.testing.assert_allclose(d['images_train'][:20, 2, 5, ch],
                               raw[:, k] - mean[k], atol=1e-3)


def test_gen_batch_every_example_once_per_epoch():
  images = np.arange(103)
  labels = images * 10
  batches = list(dh.gen_batch((images, labels), 10, 31, seed=0))
  assert all(len(b[0]) == 10 for b in batches)
  for b in batches:
    np.testing.assert_array_equal(b[1], b[0] * 10)   # pairs stay aligned
  stream = np.concatenate([b[0] for b in batches])
  for epoch in range(3):
    assert sorted(stream[epoch * 103:(epoch + 1) * 103]) == list(range(103))
  assert not np.array_equal(stream[:103], stream[103:206])  # reshuffled


def test_gen_batch_single_array_and_bad_sizes():
  assert next(dh.gen_batch(np.arange(5), 5, 1)).shape == (5,)
  for bad in (0, -1, 6):
    with pytest.raises(ValueError, match='batch_size'):
      next(dh.gen_batch(np.arange(5), bad, 1))


# --- bad input --------------------------------------------------------------

def test_no_data_set(tmp_path):
  with pytest.raises(DataSetError, match='holds neither cifar-10-batches-py'):
    dh.load_data(str(tmp_path))


@pytest.mark.parametrize('missing', ['data', 'labels'])
def test_pickle_without_entry(tmp_path, missing):
  write_py(str(tmp_path), per_file=20)
  path = tmp_path / 'cifar-10-batches-py' / 'data_batch_2'
  d = pickle.load(open(path, 'rb'), encoding='bytes')
  del d[missing.encode()]
  pickle.dump(d, open(path, 'wb'), protocol=2)
  with pytest.raises(DataSetError,
                     match="data_batch_2: no '%s' entry" % missing):
    dh.load_data(str(tmp_path))


def test_corrupt_pickle(tmp_path):
  write_py(str(tmp_path), per_file=20)
  path = tmp_path / 'cifar-10-batches-py' / 'data_batch_4'
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(DataSetError,
                     match='data_batch_4: not a readable pickle'):
    dh.load_data(str(tmp_path))


def test_pickle_label_out_of_range(tmp_path):
  write_py(str(tmp_path), per_file=20)
  path = tmp_path / 'cifar-10-batches-py' / 'test_batch'
  d = pickle.load(open(path, 'rb'), encoding='bytes')
  d[b'labels'][3] = 11
  pickle.dump(d, open(path, 'wb'), protocol=2)
  with pytest.raises(DataSetError, match='test_batch: record 3 has label 11'):
    dh.load_data(str(tmp_path))


def test_truncated_bin_file(tmp_path):
  write_bin(str(tmp_path), per_file=20)
  path = tmp_path / 'cifar-10-batches-bin' / 'data_batch_5.bin'
  path.write_bytes(path.read_bytes()[:-1])
  with pytest.raises(DataSetError, match='data_batch_5.bin: .*truncated'):
    dh.load_data(str(tmp_path))


def test_real_data_set(real_data_dir):
  d = dh.load_data(real_data_dir)
  assert d['images_train'].shape == (50000, 3072)
  assert d['images_test'].shape == (10000, 3072)
  assert np.bincount(d['labels_train']).tolist() == [5000] * 10
  assert np.bincount(d['labels_test']).tolist() == [1000] * 10
  assert d['classes'] == CLASSES
