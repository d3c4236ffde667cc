"""Tests of cifar10_input: fetching, verifying, extracting, and the pipelines."""

import dataclasses
import glob
import io
import os
import re
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from cifar10_toolkit import dataset
import cifar10_input as ci
from cifar10_toolkit import device_input
from cifar10_toolkit import errors
from data_sets import CIFAR10
import conftest
from conftest import write_bin


def _numpy_standardize(x):
  x = x.astype(np.float64)
  std = max(x.std(), 1.0 / np.sqrt(x.size))
  return (x - x.mean()) / std


def _as_hwc(data):
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


# --- decoding ---------------------------------------------------------------

def test_decode_plane_order_red_then_green_then_blue():
  data = np.zeros((1, 3072), np.uint8)
  data[0, :1024] = np.arange(1024) % 251            # red plane, row by row
  data[0, 1024:2048] = 7                             # green
  data[0, 2048:] = 9                                 # blue
  records = np.concatenate([[[3]], data], axis=1).astype(np.uint8)
  images, labels = ci.decode_records(tf.constant(records))
  images = images.numpy()
  assert labels.numpy().tolist() == [3]
  assert images.shape == (1, 32, 32, 3)
  assert images[0, 0, 5, 0] == 5 and images[0, 1, 0, 0] == 32
  assert images[0, 31, 31, 0] == 1023 % 251
  assert (images[0, :, :, 1] == 7).all() and (images[0, :, :, 2] == 9).all()


def test_load_records_reads_files_in_order(bin_dir):
  files = write_bin(bin_dir, per_file=30, seed=4)
  names = CIFAR10.train_files
  paths = [os.path.join(bin_dir, CIFAR10.folder, n) for n in names]
  records = ci.load_records(paths).numpy()
  want = np.concatenate([np.concatenate([files[n][1][:, None], files[n][0]], 1)
                         for n in names])
  np.testing.assert_array_equal(records, want)



@pytest.mark.parametrize('chunk', [7, 1000])
def test_load_words_is_to_words_of_load_records(bin_dir, chunk):
  write_bin(bin_dir, per_file=30, seed=4)
  paths = [os.path.join(bin_dir, CIFAR10.folder, n)
           for n in CIFAR10.train_files]
  words = device_input.load_words(paths, CIFAR10.record_bytes, chunk=chunk)
  assert words.dtype == tf.int32 and words.shape == (150, 769)
  np.testing.assert_array_equal(
      words.numpy(), device_input.to_words(ci.load_records(paths), CIFAR10.record_bytes).numpy())


def test_load_words_names_a_file_cut_while_read(bin_dir, monkeypatch):
  write_bin(bin_dir, per_file=30)
  paths = [os.path.join(bin_dir, CIFAR10.folder, n)
           for n in CIFAR10.train_files]
  sizes = {p: os.path.getsize(p) for p in paths}
  with open(paths[2], 'r+b') as f:  # cut after its size was taken
    f.truncate(10 * CIFAR10.record_bytes + 5)
  monkeypatch.setattr(os.path, 'getsize', sizes.get)
  with pytest.raises(errors.DataSetError, match=re.escape(
      '%s ended at byte %d while it was read (it had 30 records when '
      'checked)' % (paths[2], 10 * CIFAR10.record_bytes + 5))):
    device_input.load_words(paths, CIFAR10.record_bytes, chunk=10)


# --- evaluation input -------------------------------------------------------

def test_eval_input_covers_every_example_once_in_order(bin_dir):
  files = write_bin(bin_dir, per_file=100, test_num=150)
  data, labels = files['test_batch.bin']
  ds = ci.inputs(True, bin_dir, 64)
  batches = list(ds)
  assert [b[0].shape[0] for b in batches] == [64, 64, 22]
  got_images = np.concatenate([b[0].numpy() for b in batches])
  got_labels = np.concatenate([b[1].numpy() for b in batches])
  assert got_images.shape == (150, 24, 24,
                              3) and got_images.dtype == np.float32
  assert got_labels.dtype == np.int32
  np.testing.assert_array_equal(got_labels, labels)
  want = np.stack([_numpy_standardize(im[4:28, 4:28]) for im in _as_hwc(data)])
  np.testing.assert_allclose(got_images, want, atol=1e-4)
  dropped = list(ci.inputs(True, bin_dir, 64, drop_remainder=True))
  assert sum(b[1].shape[0] for b in dropped) == 128


def test_eval_input_on_training_files(bin_dir):
  labels = np.concatenate(
      [b[1].numpy() for b in ci.inputs(False, bin_dir, 128)])
  assert labels.shape == (500,)


# --- training input ---------------------------------------------------------

def _find_crop(out, image):
  """(row, col, flipped) whose crop of image is a per-channel affine of out."""
  best = None
  for flip in (False, True):
    src = image[:, ::-1] if flip else image
    for r in range(9):
      for c in range(9):
        crop = src[r:r + 24, c:c + 24].astype(np.float64)
        err = 0.0
        for ch in range(3):
          a = np.polyfit(crop[..., ch].ravel(), out[..., ch].ravel(), 1)
          err += np.abs(np.polyval(a, crop[..., ch].ravel()) -
                        out[..., ch].ravel()).max()
        if best is None or err < best[0]:
          best = (err, r, c, flip)
  return best


def test_distortions_are_crops_flips_and_affine_changes(bin_dir):
  files = write_bin(bin_dir, per_file=40, seed=2)
  train = np.concatenate([files[n][0] for n in CIFAR10.train_files])
  train_labels = np.concatenate(
      [files[n][1] for n in CIFAR10.train_files])
  images = _as_hwc(train)
  ds = ci.distorted_inputs(bin_dir, 50, seed=3)
  found = set()
  for step, (x, y) in enumerate(ds.take(2)):
    idx = ci.training_index_batches(200, 50, 3).skip(step).take(1)
    idx = next(iter(idx))[1].numpy()
    np.testing.assert_array_equal(y.numpy(), train_labels[idx])
    x = x.numpy()
    assert x.shape == (50, 24, 24, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-3)
    for k in range(0, 50, 5):
      err, r, c, flip = _find_crop(x[k], images[idx[k]])
      assert err < 1e-2, 'distorted image %d is no crop of its source' % k
      found.add((r, c, flip))
  rows = {f[0] for f in found}
  flips = {f[2] for f in found}
  assert len(rows) >= 4 and flips == {False, True}


def test_distortion_parameter_distributions():
  d = {k: v.numpy() for k, v in ci.distortion_draws([1, 2], 20000).items()}
  counts = np.bincount(d['offsets'].ravel(), minlength=9)
  assert counts.size == 9 and counts.min() > 0.9 * 40000 / 9
  assert 0.48 < d['flip'].mean() < 0.52
  b, c = d['brightness'].ravel(), d['contrast'].ravel()
  assert -63 <= b.min() < -62 and 62 < b.max() < 63 and abs(b.mean()) < 1.5
  assert 0.2 <= c.min() < 0.21 and 1.79 < c.max() < 1.8
  assert abs(c.mean() - 1.0) < 0.02


def test_distortion_matches_numpy_reference():
  # crop, flip, brightness, contrast, standardization, in the tutorial.s order
  images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), np.uint8)
  got = ci.distort_images(tf.constant(images), [3, 4]).numpy()
  d = {k: v.numpy() for k, v in ci.distortion_draws([3, 4], 12).items()}
  for i in range(12):
    r, c = d['offsets'][i]
    x = images[i, r:r + 24, c:c + 24].astype(np.float64)
    if d['flip'][i].item():
      x = x[:, ::-1]
    x = x + d['brightness'][i].item()
    m = x.mean(axis=(0, 1), keepdims=True)
    x = (x - m) * d['contrast'][i].item() + m
    np.testing.assert_allclose(got[i], _numpy_standardize(x), atol=1e-4)


def test_same_seed_same_batches_and_resume_continues(bin_dir):
  a = [x.numpy() for x, _ in ci.distorted_inputs(bin_dir, 64, seed=7).take(10)]
  b = [x.numpy() for x, _ in ci.distorted_inputs(bin_dir, 64, seed=7).take(10)]
  c = [x.numpy() for x, _ in ci.distorted_inputs(bin_dir, 64, seed=8).take(1)]
  r = [x.numpy() for x, _ in
       ci.distorted_inputs(bin_dir, 64, seed=7, start_step=6).take(4)]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.allclose(a[0], c[0])
  for x, y in zip(a[6:], r):
    np.testing.assert_array_equal(x, y)


def test_every_example_once_per_epoch():
  batches = ci.training_index_batches(500, 64, seed=1).take(500 * 3 // 64)
  stream = np.concatenate([b.numpy() for _, b in batches])
  for epoch in range(2):
    chunk = stream[epoch * 500:(epoch + 1) * 500]
    assert sorted(chunk.tolist()) == list(range(500))
  assert not np.array_equal(stream[:500], stream[500:1000])


def test_replica_slices_equal_the_single_device_batch(bin_dir):
  single = next(iter(ci.distorted_inputs(bin_dir, 128, seed=5)))
  ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                   num_replicas_in_sync=2)
  two = list(
      ci.distorted_inputs(bin_dir, 64, seed=5, input_context=ctx).take(2))
  np.testing.assert_allclose(np.concatenate([two[0][0], two[1][0]]), single[0],
                             atol=1e-5)
  np.testing.assert_array_equal(np.concatenate([two[0][1], two[1][1]]),
                                single[1])
  # Two workers, one replica each: worker 1 gets the second half.
  ctx1 = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                    num_replicas_in_sync=2)
  w1 = next(iter(ci.distorted_inputs(bin_dir, 64, seed=5, input_context=ctx1)))
  np.testing.assert_allclose(w1[0], single[0][64:], atol=1e-5)


def test_image_summary_writes_images(tmp_path, bin_dir):
  from tensorboard.backend.event_processing import event_accumulator
  x, _ = next(iter(ci.distorted_inputs(bin_dir, 16, seed=1)))
  with tf.summary.create_file_writer(str(tmp_path)).as_default():
    ci.image_summary(x, step=3, max_outputs=4)
  acc = event_accumulator.EventAccumulator(
      str(tmp_path), size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  events = acc.Tensors('images')
  assert events[0].step == 3
  # width, height, then 4 encoded PNGs
  assert len(events[0].tensor_proto.string_val) == 6


# --- bad input --------------------------------------------------------------

@pytest.mark.parametrize('bad', [0, -4])
def test_bad_batch_size(bin_dir, bad):
  with pytest.raises(ValueError, match='batch_size'):
    ci.distorted_inputs(bin_dir, bad)
  with pytest.raises(ValueError, match='batch_size'):
    ci.inputs(True, bin_dir, bad)


@pytest.mark.parametrize('change', ['truncate', 'pad'])
def test_truncated_or_padded_file(bin_dir, change):
  path = os.path.join(bin_dir, CIFAR10.folder, 'data_batch_3.bin')
  raw = open(path, 'rb').read()
  open(path, 'wb').write(raw[:-10] if change == 'truncate' else raw + b'\0')
  with pytest.raises(errors.DataSetError,
                     match='data_batch_3.bin.*whole number'):
    ci.distorted_inputs(bin_dir, 10)
  with pytest.raises(errors.DataSetError, match='data_batch_3.bin'):
    dataset.maybe_download_and_extract(bin_dir, None, CIFAR10)


def test_label_above_nine(bin_dir):
  path = os.path.join(bin_dir, CIFAR10.folder, 'test_batch.bin')
  raw = bytearray(open(path, 'rb').read())
  raw[CIFAR10.record_bytes * 5] = 12
  open(path, 'wb').write(bytes(raw))
  with pytest.raises(errors.DataSetError,
                     match=r'test_batch.bin: record 5 has label byte 12'):
    ci.inputs(True, bin_dir, 10)


def test_no_data_and_no_way_to_fetch(tmp_path, monkeypatch):
  monkeypatch.setenv(CIFAR10.source_env, 'http://127.0.0.1:9/cifar.tar.gz')
  data_dir = str(tmp_path / 'data')
  with pytest.raises(errors.DataSetError) as e:
    dataset.maybe_download_and_extract(data_dir, None, CIFAR10)
  msg = str(e.value)
  assert data_dir in msg and CIFAR10.source_env in msg and '\n' not in msg
  assert not os.path.exists(data_dir)  # (made for the download: removed)
  with pytest.raises(errors.DataSetError, match='does not exist'):
    dataset.maybe_download_and_extract(data_dir,
                                            str(tmp_path / 'nowhere.tar.gz'), CIFAR10)


# --- archives ---------------------------------------------------------------

def _make_archive(path, label_fn=lambda i: i % 10, sizes=None, extra=None):
  """A full-size archive: 6 files of 10,000 records, zero pixels (fast gzip)."""
  names = list(CIFAR10.train_files) + [CIFAR10.test_files[0]]
  with tarfile.open(path, 'w:gz', compresslevel=1) as tar:
    for k, name in enumerate(names):
      records = np.zeros(
          (conftest.RECORDS_PER_FILE, CIFAR10.record_bytes), np.uint8)
      records[:,
              0] = [label_fn(i) for i in range(conftest.RECORDS_PER_FILE)]
      records[:, 1:] = k
      raw = records.tobytes()
      if sizes and name in sizes:
        raw = raw[:sizes[name]]
      info = tarfile.TarInfo(CIFAR10.folder + '/' + name)
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
    meta = b'\n'.join(c.encode() for c in CIFAR10.class_names)
    info = tarfile.TarInfo(CIFAR10.folder + '/batches.meta.txt')
    info.size = len(meta)
    tar.addfile(info, io.BytesIO(meta))
  return path


@pytest.fixture(scope='module')
def good_archive(tmp_path_factory):
  return _make_archive(
      str(tmp_path_factory.mktemp('arch') / CIFAR10.archive))


def _nothing_half_extracted(data_dir):
  assert not os.path.exists(os.path.join(data_dir, CIFAR10.folder))
  assert glob.glob(os.path.join(data_dir, '.extract-*')) == []


def test_extract_from_local_archive_path(tmp_path, good_archive):
  out = dataset.maybe_download_and_extract(str(tmp_path), good_archive, CIFAR10)
  assert sorted(os.listdir(out)) == sorted(
      list(CIFAR10.train_files) +
      [CIFAR10.test_files[0], 'batches.meta.txt'])
  assert glob.glob(str(tmp_path / '.extract-*')) == []


def test_download_by_url_then_never_again(tmp_path, good_archive, monkeypatch,
                                          capsys):
  data_dir = str(tmp_path)
  dataset.maybe_download_and_extract(data_dir, 'file://' + good_archive, CIFAR10)
  assert 'Downloading' in capsys.readouterr().out
  assert os.path.isfile(os.path.join(data_dir, CIFAR10.archive))
  # The archive is present: removing the extracted folder re-extracts it
  # without fetching, even from an unreachable source.
  import shutil
  shutil.rmtree(os.path.join(data_dir, CIFAR10.folder))
  monkeypatch.setenv(CIFAR10.source_env, 'http://127.0.0.1:9/x.tar.gz')
  dataset.maybe_download_and_extract(data_dir, None, CIFAR10)
  assert 'Downloading' not in capsys.readouterr().out


def test_environment_variable_selects_source(tmp_path, good_archive,
                                             monkeypatch):
  monkeypatch.setenv(CIFAR10.source_env, good_archive)
  assert os.path.isdir(dataset.maybe_download_and_extract(str(tmp_path), None, CIFAR10))


def test_official_url_checks_md5(tmp_path, good_archive, monkeypatch):
  official = dataclasses.replace(CIFAR10, url='file://' + good_archive)
  monkeypatch.delenv(CIFAR10.source_env, raising=False)
  with pytest.raises(errors.DataSetError,
                     match='md5 .* differs from the official'):
    dataset.maybe_download_and_extract(str(tmp_path), None, official)
  _nothing_half_extracted(str(tmp_path))
  assert not os.path.exists(str(
      tmp_path / CIFAR10.archive))  # bad download gone


def test_corrupt_archive(tmp_path):
  bad = tmp_path / 'bad.tar.gz'
  bad.write_bytes(b'this is not gzip' * 100)
  data_dir = str(tmp_path / 'data')
  with pytest.raises(errors.DataSetError,
                     match='bad.tar.gz: not a readable gzip'):
    dataset.maybe_download_and_extract(data_dir, str(bad), CIFAR10)
  _nothing_half_extracted(data_dir)


def test_cut_off_archive(tmp_path, good_archive):
  cut = tmp_path / 'cut.tar.gz'
  cut.write_bytes(open(good_archive, 'rb').read()[:50000])
  data_dir = str(tmp_path / 'data')
  with pytest.raises(errors.DataSetError, match='cut.tar.gz'):
    dataset.maybe_download_and_extract(data_dir, str(cut), CIFAR10)
  _nothing_half_extracted(data_dir)


def test_archive_with_short_file(tmp_path):
  arch = _make_archive(
      str(tmp_path / 'short.tar.gz'),
      sizes={'data_batch_2.bin': conftest.FILE_BYTES - 3073})
  data_dir = str(tmp_path / 'data')
  with pytest.raises(
      errors.DataSetError,
      match=r'short.tar.gz: cifar-10-batches-bin/data_batch_2.bin is 30726927 '
      r'bytes, expected exactly 30730000; nothing was extracted'):
    dataset.maybe_download_and_extract(data_dir, arch, CIFAR10)
  _nothing_half_extracted(data_dir)


def test_archive_with_bad_label(tmp_path):
  arch = _make_archive(str(tmp_path / 'lab.tar.gz'),
                       label_fn=lambda i: 10 if i == 77 else 1)
  data_dir = str(tmp_path / 'data')
  with pytest.raises(errors.DataSetError,
                     match=r'record 77 has label byte 10'):
    dataset.maybe_download_and_extract(data_dir, arch, CIFAR10)
  _nothing_half_extracted(data_dir)


# --- the real data set ------------------------------------------------------

def test_real_data_set_counts(real_data_dir):
  d = os.path.join(real_data_dir, CIFAR10.folder)
  dataset.check_batches_bin(d, CIFAR10, exact_size=True)
  train = ci.load_records(
      [os.path.join(d, n) for n in CIFAR10.train_files])
  test = ci.load_records([os.path.join(d, CIFAR10.test_files[0])])
  assert train.shape == (50000, 3073) and test.shape == (10000, 3073)
  assert np.bincount(train[:, 0].numpy()).tolist() == [5000] * 10
  assert np.bincount(test[:, 0].numpy()).tolist() == [1000] * 10


def test_tests_find_the_real_data_where_the_readme_puts_it(tmp_path,
                                                           monkeypatch):
  import conftest
  archive = tmp_path / 'cifar-10-binary.tar.gz'
  archive.write_bytes(b'x')
  monkeypatch.setattr(conftest, 'ROOT', str(tmp_path / 'clone'))
  monkeypatch.setenv('CIFAR10_DATA_SOURCE', str(archive))
  assert conftest.real_archive() == str(archive)
  monkeypatch.setenv('CIFAR10_DATA_SOURCE', 'https://example.org/c.tar.gz')
  assert conftest.real_archive() is None  # tests fetch nothing
  monkeypatch.delenv('CIFAR10_DATA_SOURCE')
  assert conftest.real_archive() is None
  beside = tmp_path / 'data' / 'cifar10' / 'cifar-10-binary.tar.gz'
  beside.parent.mkdir(parents=True)
  beside.write_bytes(b'x')  # a copy in a folder beside the clone
  assert conftest.real_archive() == str(beside)
