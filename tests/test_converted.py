"""--dataset DIR (a folder of images) and --dataset svhn: made into records
once, then trained, evaluated, exported and classified as CIFAR-10 is; the
folder's and the MATLAB files' bad input, one line each."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

import cifar10_classify
import cifar10_eval
import cifar10_export
import cifar10_input
import cifar10_train
import conftest
import data_sets
from cifar10_toolkit import converted
from cifar10_toolkit import dataset
from cifar10_toolkit import errors
from cifar10_toolkit import images
from cifar10_toolkit import run_control
from conftest import ROOT
from data_sets import SVHN, SVHN_EXTRA

# a costly module fixture: its tests run in one process (--dist loadgroup)
pytestmark = pytest.mark.xdist_group('folder_run')

COLOURS = {'blue': (20, 40, 220), 'green': (30, 200, 40), 'red': (220, 30, 30)}
FORMATS = ('PNG', 'JPEG', 'BMP', 'GIF')


def write_folder(root, per_class=12, test=True, seed=0):
  """root/train/<class>/ (and root/test/<class>/): noisy pictures of each
  class's colour, of varied sizes and aspect ratios, in all four formats."""
  rng = np.random.default_rng(seed)
  for split, n in (('train', per_class), ('test', 4)) if test else (
      ('train', per_class),):
    for name, colour in COLOURS.items():
      folder = os.path.join(root, split, name)
      os.makedirs(folder)
      for i in range(n):
        h, w = 32 + 8 * (i % 3), 32 + 12 * (i % 2)
        pixels = np.clip(rng.normal(colour, 40, (h, w, 3)), 0, 255)
        fmt = FORMATS[i % 4]
        Image.fromarray(pixels.astype(np.uint8)).save(
            os.path.join(folder, '%s_%d.%s' % (name, i, fmt.lower())), fmt)
  return root


def _one_line(capsys, status, want_status, *fragments):
  err = capsys.readouterr().err.strip().splitlines()
  assert status == want_status and len(err) == 1, err
  for f in fragments:
    assert f in err[0], err
  return err[0]


@pytest.fixture(scope='module')
def folder_run(tmp_path_factory):
  """A folder of images, its records, a 30-step run on it."""
  root = write_folder(str(tmp_path_factory.mktemp('pictures')))
  data = str(tmp_path_factory.mktemp('folder_data'))
  train = str(tmp_path_factory.mktemp('folder_train'))
  assert cifar10_train.main(conftest.train_args(data, train) + [
      '--dataset', root, '--batch_size', '12', '--max_steps', '30',
      '--learning_rate', '0.05']) == 0
  return root, data, train


def test_a_folder_is_a_data_set_named_by_its_folders(folder_run):
  root = folder_run[0]
  d = data_sets.get(root)
  assert d.class_names == ('blue', 'green', 'red') and d.name == root
  assert (d.train_size, d.test_size, d.image_shape) == (36, 12, (32, 32, 3))
  # the records: each image read as classify reads it (centre square,
  # scaled), its label the folder's
  folder = os.path.join(folder_run[1], d.folder)
  manifest = json.load(open(os.path.join(folder, converted.MANIFEST)))
  records = np.fromfile(os.path.join(folder, 'train.bin'), np.uint8).reshape(
      -1, d.record_bytes)
  assert len(records) == 36 and not manifest['carved']
  for k in (0, 5, 22, 35):
    label, rel = manifest['train'][k][:2]
    want = images.read(os.path.join(root, rel), (32, 32, 3))
    assert records[k, 0] == label == d.class_names.index(rel.split('/')[1])
    np.testing.assert_array_equal(records[k, 1:], want.transpose(2, 0, 1
                                                                 ).ravel())


@pytest.mark.slow
def test_a_folder_evaluates_exports_and_classifies(folder_run, tmp_path,
                                                   capsys):
  root, data, train = folder_run
  capsys.readouterr()
  assert cifar10_eval.main(['--dataset', root, '--checkpoint_dir', train,
                            '--eval_dir', str(tmp_path / 'eval'),
                            '--data_dir', data, '--run_once']) == 0
  out = capsys.readouterr().out
  precision = float(re.search(r'precision @ 1 = ([\d.]+)', out).group(1))
  assert precision >= 0.9, out  # three colours, told apart in 30 steps
  for name in COLOURS:
    assert re.search(r'^  %s +[01]\.\d{3} +[01]\.\d{3}$' % name, out, re.M)
  model = str(tmp_path / 'model')
  assert cifar10_export.main(['--dataset', root, '--checkpoint_dir', train,
                              '--export_dir', model]) == 0
  capsys.readouterr()
  pictures = [os.path.join(root, 'test', c, '%s_%d.%s' % (c, i, f.lower()))
              for c in COLOURS for i, f in enumerate(FORMATS)]
  assert cifar10_classify.main(pictures + ['--export_dir', model, '--resize',
                                           '--top_k', '1']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  right = sum(line.split(': ')[1].split()[0] == line.split('/')[-2]
              for line in lines)
  assert len(lines) == 12 and right >= 11, lines


@pytest.mark.slow
def test_a_folder_resumes_to_the_same_bits(tmp_path):
  root = write_folder(str(tmp_path / 'pictures'), per_class=8)
  data = str(tmp_path / 'data')
  common = ['--dataset', root, '--batch_size', '8']
  assert cifar10_train.main(conftest.train_args(
      data, str(tmp_path / 'a')) + common + ['--max_steps', '6']) == 0
  for steps in ('3', '6'):
    assert cifar10_train.main(conftest.train_args(
        data, str(tmp_path / 'b')) + common + ['--max_steps', steps]) == 0
  a = conftest.checkpoint_params(str(tmp_path / 'a' / 'ckpt-6'))
  b = conftest.checkpoint_params(str(tmp_path / 'b' / 'ckpt-6'))
  for name in a[0]:
    np.testing.assert_array_equal(a[0][name], b[0][name])


def test_the_records_are_remade_when_the_folder_changes(tmp_path, capsys):
  root = write_folder(str(tmp_path / 'pictures'), per_class=6, test=False)
  data = str(tmp_path / 'data')
  d = data_sets.get(root)
  # no test/: a seeded tenth of each class (at least one) held out
  assert (d.train_size, d.test_size) == (15, 3)
  folder = dataset.maybe_download_and_extract(data, None, d)
  made = capsys.readouterr().out
  assert 'Making %s: 18 images (0 ignored' % root in made
  manifest = json.load(open(os.path.join(folder, converted.MANIFEST)))
  assert manifest['carved'] and manifest['split_seed'] == converted.SPLIT_SEED
  held = sorted(e[1] for e in manifest['test'])
  assert len(held) == 3 and len({h.split('/')[1] for h in held}) == 3
  # unchanged: the records are used as they are, silently
  before = os.stat(os.path.join(folder, 'train.bin')).st_mtime_ns
  assert dataset.maybe_download_and_extract(data, None, d) == folder
  assert capsys.readouterr().out == ''
  assert os.stat(os.path.join(folder, 'train.bin')).st_mtime_ns == before
  # one picture rewritten, one file that is no image added: remade, said
  picture = os.path.join(root, held[0])
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
      picture, Image.open(picture).format)
  open(os.path.join(root, 'train', 'red', 'notes.txt'), 'w').write('x')
  assert dataset.maybe_download_and_extract(data, None, d) == folder
  out = capsys.readouterr().out
  assert ('The images changed since their records were made (0 added, 0 '
          'removed, 1 changed); remaking %s: 18 images (1 ignored' % root
          ) in out, out
  again = json.load(open(os.path.join(folder, converted.MANIFEST)))
  assert sorted(e[1] for e in again['test']) == held  # the same split
  assert sorted(os.listdir(data)) == [d.folder]  # nothing left beside it


@pytest.mark.parametrize('shape, message', [
    ({'train': []}, 'train: no class folders; a classifier needs two'),
    ({'train': ['cat']}, 'train: one class folder only (cat)'),
    ({'train': ['cat', 'dog'], 'test': ['cat', 'cow']},
     'hold different class folders (cow, dog)'),
    ({'train': ['cat', 'dog', 'empty']}, 'train/empty: an empty class'),
    ({}, ': no train/ folder')])
def test_a_folder_of_the_wrong_shape_is_a_flag_error(shape, message,
                                                     tmp_path):
  root = tmp_path / 'pictures'
  root.mkdir()
  for split, classes in shape.items():
    for c in classes:
      (root / split / c).mkdir(parents=True)
      if c != 'empty':
        Image.new('RGB', (32, 32)).save(root / split / c / 'a.png')
    (root / split).mkdir(exist_ok=True)
  proc = subprocess.run(
      [sys.executable, 'cifar10_train.py', '--dataset', str(root),
       '--train_dir', str(tmp_path / 't'), '--data_dir', str(tmp_path / 'd')],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  err = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(err) == 1 and message in err[0], err
  assert str(root) in err[0] and sorted(os.listdir(tmp_path)) == ['pictures']


def _corrupt(path):
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)


def _empty(path):
  open(path, 'wb').close()


def _fifo(path):
  os.mkfifo(path)


def _outside(path):
  os.symlink(os.path.join(os.path.dirname(path), '..', '..', '..', 'out.png'),
             path)


def _huge(path):
  # a PNG whose header declares 30,000 x 30,000 pixels (2.7 GB decoded)
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n\0\0\0\rIHDR' +
            (30000).to_bytes(4, 'big') * 2 + b'\x08\x02\0\0\0' + b'\0' * 20)


@pytest.mark.parametrize('make, message', [
    (_corrupt, 'not a PNG, JPEG, BMP or GIF image'),
    (_empty, 'an empty (0-byte) file'),
    (_fifo, 'not a regular file'),
    (_outside, 'a symbolic link out of'),
    (_huge, '30000x30000 pixels, more than the 64 megapixels')])
def test_a_bad_image_is_one_line_and_nothing_is_written(make, message,
                                                        tmp_path, capsys):
  root = write_folder(str(tmp_path / 'pictures'), per_class=2)
  Image.new('RGB', (32, 32)).save(tmp_path / 'out.png')
  bad = os.path.join(root, 'train', 'green', 'bad.png')
  make(bad)
  status = run_control.run_main(cifar10_train.main, conftest.train_args(
      str(tmp_path / 'data'), str(tmp_path / 'train')) + [
          '--dataset', root, '--max_steps', '1', '--batch_size', '2'])
  _one_line(capsys, status, 1, bad, message)
  assert sorted(os.listdir(tmp_path)) == ['out.png', 'pictures']


# --- SVHN --------------------------------------------------------------------

def write_svhn(folder, sizes=(('train_32x32.mat', 120), ('test_32x32.mat', 40)),
               seed=0):
  """SVHN's MATLAB files in their official form: X uint8 [32, 32, 3, N], y
  uint8 [N, 1] with 10 for the digit 0; returns {file: (X, y)}."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  out = {}
  for name, n in sizes:
    y = (np.arange(n) % 10 + 1).astype(np.uint8)[rng.permutation(n)]
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    x[:, :, 0, :] = np.clip(x[:, :, 0, :] // 3 + 18 * y, 0, 255)
    scipy.io.savemat(os.path.join(folder, name), {'X': x, 'y': y[:, None]},
                     do_compression=True)
    out[name] = (x, y)
  return out


def test_svhn_records_are_the_matlab_digits(tmp_path, monkeypatch):
  monkeypatch.delenv(SVHN.source_env, raising=False)
  mats = write_svhn(str(tmp_path / 'mats'))
  folder = dataset.maybe_download_and_extract(str(tmp_path / 'data'),
                                              str(tmp_path / 'mats'), SVHN)
  for record_file, mat in (('train.bin', 'train_32x32.mat'),
                           ('test.bin', 'test_32x32.mat')):
    x, y = mats[mat]
    records = cifar10_input.load_records([os.path.join(folder, record_file)],
                                         SVHN)
    pictures, labels = cifar10_input.decode_records(records, SVHN)
    assert labels.numpy().tolist() == (y % 10).tolist()  # 10 is the digit 0
    np.testing.assert_array_equal(pictures.numpy(), x.transpose(3, 0, 1, 2))
  assert sorted(os.listdir(tmp_path / 'data')) == ['svhn-bin']


@pytest.mark.slow
def test_svhn_and_its_extra_train_and_evaluate(tmp_path, capsys):
  mats = str(tmp_path / 'mats')
  write_svhn(mats, sizes=(('train_32x32.mat', 100), ('test_32x32.mat', 30),
                          ('extra_32x32.mat', 60)))
  data = str(tmp_path / 'data')
  for name, steps in (('svhn', '4'), ('svhn_extra', '4')):
    train = str(tmp_path / name)
    assert cifar10_train.main(conftest.train_args(data, train) + [
        '--dataset', name, '--data_source', mats, '--max_steps', steps]) == 0
    assert cifar10_eval.main(['--dataset', name, '--checkpoint_dir', train,
                              '--eval_dir', train + '_eval', '--data_dir',
                              data, '--run_once']) == 0
    out = capsys.readouterr().out
    assert re.search(r'checkpoint .*ckpt-4 \(step 4\), 30 examples', out)
  assert SVHN_EXTRA.train_size == 604388
  extra = os.path.join(data, SVHN_EXTRA.folder)
  assert [os.path.getsize(os.path.join(extra, f)) // 3073
          for f in ('train.bin', 'extra.bin', 'test.bin')] == [100, 60, 30]


def test_svhn_bad_files_are_one_line(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv(SVHN.source_env, raising=False)
  mats = str(tmp_path / 'mats')
  os.makedirs(mats)
  data = str(tmp_path / 'data')
  write_svhn(mats, sizes=(('train_32x32.mat', 20),))
  with pytest.raises(errors.DataSetError, match=r'^no test_32x32\.mat in '):
    dataset.maybe_download_and_extract(data, mats, SVHN)
  with open(os.path.join(mats, 'test_32x32.mat'), 'wb') as f:
    f.write(b'MATLAB 5.0 MAT-file' + b'\0' * 30)
  with pytest.raises(errors.DataSetError,
                     match=r'test_32x32\.mat: not a MATLAB file with X and y'):
    dataset.maybe_download_and_extract(data, mats, SVHN)
  y = np.full((5, 1), 11, np.uint8)
  scipy.io.savemat(os.path.join(mats, 'test_32x32.mat'), {
      'X': np.zeros((32, 32, 3, 5), np.uint8), 'y': y})
  with pytest.raises(errors.DataSetError,
                     match=r'test_32x32\.mat: labels outside 1-10'):
    dataset.maybe_download_and_extract(data, mats, SVHN)
  assert not os.path.exists(data)  # nothing half-made
