"""Hostile or outsized data: a gzip bomb stopped from the tar headers, a
file over the official record count, a disk that fills while extracting."""

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from cifar10_toolkit import dataset
from cifar10_toolkit import errors
from data_sets import CIFAR10
import conftest
from conftest import ROOT, write_bin

NAMES = CIFAR10.train_files + (CIFAR10.test_files[0],)


def _archive(path, sizes):
  """A cifar-10-binary.tar.gz whose data files are zeros of these sizes."""
  with tarfile.open(path, 'w:gz') as tar:
    for name in NAMES:
      info = tarfile.TarInfo('%s/%s' % (CIFAR10.folder, name))
      info.size = sizes.get(name, conftest.FILE_BYTES)
      tar.addfile(info, io.BytesIO(bytes(info.size)))
  return path


def test_a_gzip_bomb_is_refused_before_anything_is_written(tmp_path):
  bomb = _archive(str(tmp_path / 'bomb.tar.gz'),
                  {'data_batch_1.bin': 20 * conftest.FILE_BYTES})  # 615 MB
  assert os.path.getsize(bomb) < 5 * 10**6
  data_dir = str(tmp_path / 'data')
  with pytest.raises(errors.DataSetError) as e:
    dataset.maybe_download_and_extract(data_dir, bomb, CIFAR10)
  assert str(e.value) == (
      '%s: cifar-10-batches-bin/data_batch_1.bin is %d bytes, expected '
      'exactly %d; nothing was extracted' % (bomb, 20 * conftest.FILE_BYTES,
                                             conftest.FILE_BYTES))
  assert not os.path.exists(data_dir)  # no half-written folder, no empty one


def test_a_file_over_the_official_record_count_is_refused(tmp_path):
  write_bin(str(tmp_path), per_file=100)
  path = os.path.join(str(tmp_path), CIFAR10.folder, 'data_batch_3.bin')
  records = np.zeros((conftest.RECORDS_PER_FILE + 1, CIFAR10.record_bytes),
                     np.uint8)
  records.tofile(path)
  with pytest.raises(errors.DataSetError) as e:
    dataset.maybe_download_and_extract(str(tmp_path), None, CIFAR10)
  assert str(e.value) == ('%s: 10001 records, more than the official 10000 a '
                          'file (a padded or repeated file)' % path)


@pytest.mark.slow
def test_a_disk_that_fills_while_extracting_keeps_the_archive(tmp_path):
  good = _archive(str(tmp_path / 'good.tar.gz'), {})
  data_dir = str(tmp_path / 'data')
  # a child whose files may not grow past 10 MB: the extraction's first
  # file fails as on a full disk (EFBIG), the 'download' (a file:// URL,
  # fetched as from a mirror) fits
  code = ('import resource, signal, sys\n'
          'sys.path.insert(0, %r)\n'
          'signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n'
          'resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))\n'
          'from cifar10_toolkit import dataset, errors\n'
          'from data_sets import CIFAR10\n'
          'try:\n'
          '  dataset.maybe_download_and_extract(%r, %r, CIFAR10)\n'
          'except errors.DataSetError as e:\n'
          '  print(e)\n' % (ROOT, data_dir, 'file://' + good))
  p = subprocess.run([sys.executable, '-c', code], capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 0, p.stderr
  line = p.stdout.strip().splitlines()[-1]
  assert line.startswith('no room to extract %s into %s (' % (
      os.path.join(data_dir, CIFAR10.archive), data_dir)), line
  assert 'the archive is kept' in line
  assert sorted(os.listdir(data_dir)) == [CIFAR10.archive]
  assert os.path.getsize(os.path.join(data_dir, CIFAR10.archive)) == \
      os.path.getsize(good)


@pytest.mark.parametrize('labels,says', [
    # 4.7 KB of pickle: one list of 300 shared 1,000 x 1,000 times (3 GB as
    # an array)
    (lambda n: [[[1] * 300] * 1000] * n, "'labels' is nested (lists inside "
     "the list), expected a flat list of 1000 integers"),
    (lambda n: [[1, 2], [3]] * (n // 2), "'labels' is nested (lists inside "
     "the list), expected a flat list of 1000 integers"),
    (lambda n: [1] * (n + 1), '1001 labels for 1000 images')])
def test_a_pickle_whose_labels_would_build_gigabytes_is_one_line(
    tmp_path, capsys, labels, says):
  import pickle
  import run_fc_model
  from cifar10_toolkit import run_control
  from conftest import write_py
  write_py(str(tmp_path), per_file=1000)
  path = os.path.join(str(tmp_path), 'cifar-10-batches-py', 'data_batch_2')
  with open(path, 'wb') as f:
    pickle.dump({b'data': np.zeros((1000, 3072), np.uint8),
                 b'labels': labels(1000)}, f, protocol=2)
  status = run_control.run_main(run_fc_model.main, [
      '--data_dir', str(tmp_path), '--train_dir', str(tmp_path / 'r'),
      '--max_steps', '1', '--batch_size', '10'])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1, err
  assert err[0].endswith('error: %s: %s' % (path, says)), err


@pytest.mark.parametrize('script,flags', [
    ('cifar10_train.py', ['--train_dir', 'a/train', '--max_steps', '1']),
    ('cifar10_eval.py', ['--eval_dir', 'a/eval', '--checkpoint_dir', '.',
                         '--run_once']),
    ('run_fc_model.py', ['--train_dir', 'a/train', '--max_steps', '1']),
])
def test_a_failed_run_leaves_no_empty_folder(tmp_path, script, flags):
  """Nothing fetched (the source is missing): the folders the run made for
  itself (its own, the data's, their parents) are gone again, and one that
  was there before (empty) is left as it was, without a lock file."""
  (tmp_path / 'existing').mkdir()
  flags = [f.replace('a/', str(tmp_path / 'new' / 'a') + '/') for f in flags]
  for folder in ('new/data', 'existing'):
    proc = subprocess.run(
        [sys.executable, script, '--data_dir', str(tmp_path / folder),
         '--data_source', str(tmp_path / 'missing.tar.gz')] + (
             flags if folder == 'new/data' else [
                 str(tmp_path / 'existing') if f.startswith(str(tmp_path))
                 else f for f in flags]),
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert 'missing.tar.gz does not exist' in proc.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == ['existing']
  assert not list((tmp_path / 'existing').iterdir())
