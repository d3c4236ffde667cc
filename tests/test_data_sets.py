"""--dataset: CIFAR-100 (fine and coarse) through every script, on small data
made in its exact official layout and on the official bytes that
../shared/cifar100 holds; the data set and schedule a checkpoint records."""

import glob
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf

import cifar10_classify
import cifar10_eval
import cifar10_export
import cifar10_input
import cifar10_train
import conftest
import convnet
import data_sets
import restore_model
import run_fc_model
from cifar10_toolkit import config
from cifar10_toolkit import dataset
from cifar10_toolkit import errors
from cifar10_toolkit import hardware
from cifar10_toolkit import run_control
from cifar10_toolkit import run_record
from conftest import ROOT
from data_sets import CIFAR10, CIFAR100, CIFAR100_COARSE

# a costly module fixture: its tests run in one process (--dist loadgroup)
pytestmark = pytest.mark.xdist_group('cifar100_run')

PARTIAL = 'cifar-100-partial.tar.gz'


def shared_cifar100():
  """The folder of ../shared/cifar100's records, extracted, or a skip."""
  found = sorted(glob.glob(os.path.join(os.path.dirname(ROOT), '*',
                                        'cifar100', PARTIAL)))
  if not found:
    pytest.skip('no %s beside the clone (../shared/cifar100)' % PARTIAL)
  return found[0]


def write_cifar100(folder, train=500, test=100, seed=0):
  """cifar-100-binary/ under folder in the official layout (coarse byte,
  fine byte, 3,072 image bytes); returns {name: (images, coarse, fine)}."""
  out = os.path.join(folder, CIFAR100.folder)
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(seed)
  files = {}
  for name, n in (('train.bin', train), ('test.bin', test)):
    fine = (np.arange(n) % 100).astype(np.uint8)[rng.permutation(n)]
    coarse = (fine // 5).astype(np.uint8)
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    # a class-dependent brightness, so that a few steps learn something
    images[:, :1024] = np.clip(images[:, :1024] // 2 + fine[:, None], 0, 255)
    np.concatenate([coarse[:, None], fine[:, None], images], 1).tofile(
        os.path.join(out, name))
    files[name] = (images, coarse, fine)
  for names, path in ((CIFAR100.class_names, CIFAR100.names_file),
                      (CIFAR100_COARSE.class_names,
                       CIFAR100_COARSE.names_file)):
    with open(os.path.join(out, path), 'w') as f:
      f.write('\n'.join(names) + '\n')
  return files


def test_records_decode_the_fine_or_the_coarse_label():
  records = np.zeros((3, 3074), np.uint8)
  records[:, 0] = [4, 7, 19]     # coarse
  records[:, 1] = [40, 99, 0]    # fine
  records[:, 2:] = np.arange(3072) % 251
  images, labels = cifar10_input.decode_records(tf.constant(records),
                                                CIFAR100)
  assert labels.numpy().tolist() == [40, 99, 0]
  _, coarse = cifar10_input.decode_records(tf.constant(records),
                                           CIFAR100_COARSE)
  assert coarse.numpy().tolist() == [4, 7, 19]
  planes = (np.arange(3072) % 251).reshape(3, 32, 32)  # red, green, blue
  np.testing.assert_array_equal(images.numpy()[1],
                                planes.transpose(1, 2, 0))


def test_the_descriptions():
  assert data_sets.NAMES[0] == 'cifar10'
  assert (CIFAR100.num_classes, CIFAR100_COARSE.num_classes) == (100, 20)
  assert CIFAR100.record_bytes == 3074 and CIFAR10.record_bytes == 3073
  assert CIFAR100.file_records('train.bin') == 50000
  assert CIFAR100.file_records('test.bin') == 10000
  assert CIFAR10.file_records('data_batch_3.bin') == 10000
  with pytest.raises(errors.UsageError,
                     match="^'svhm': unknown; choose one of cifar10, "
                     'cifar100, cifar100_coarse, svhn, svhn_extra, a folder '
                     'of images'):
    data_sets.get('svhm')


def test_the_official_cifar100_bytes_names_and_labels(tmp_path):
  with tarfile.open(shared_cifar100()) as tar:
    tar.extractall(tmp_path, filter='data')
  folder = tmp_path / 'cifar-100-partial'
  for data_set in (CIFAR100, CIFAR100_COARSE):
    with open(folder / data_set.names_file) as f:
      assert tuple(f.read().split()) == data_set.class_names
  for name, tsv in (('train.bin', 'train_labels.tsv'),
                    ('test.bin', 'test_labels.tsv')):
    n = dataset.check_bin_file(str(folder / name), CIFAR100)
    assert n in (1117, 916)
    rows = [line.split('\t') for line in open(folder / tsv).read(
        ).splitlines() if line and line[0].isdigit()][:n]
    records = cifar10_input.load_records([str(folder / name)], CIFAR100)
    for data_set, column in ((CIFAR100, 2), (CIFAR100_COARSE, 1)):
      _, labels = cifar10_input.decode_records(records, data_set)
      assert labels.numpy().tolist() == [int(r[column]) for r in rows]


def _full_size_archive(path, names_file_lines=None, bad_label_at=None):
  """A full-size cifar-100-binary.tar.gz: 50,000 and 10,000 records,
  labels cycling, zero pixels (fast gzip)."""
  with tarfile.open(path, 'w:gz', compresslevel=1) as tar:
    for name, n in (('train.bin', 50000), ('test.bin', 10000)):
      records = np.zeros((n, 3074), np.uint8)
      records[:, 1] = np.arange(n) % 100
      records[:, 0] = records[:, 1] // 5
      if bad_label_at is not None and name == 'train.bin':
        records[bad_label_at, 1] = 100
      raw = records.tobytes()
      info = tarfile.TarInfo('cifar-100-binary/' + name)
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
    for data_set in (CIFAR100, CIFAR100_COARSE):
      lines = names_file_lines or data_set.class_names
      text = ('\n'.join(lines) + '\n').encode()
      info = tarfile.TarInfo('cifar-100-binary/' + data_set.names_file)
      info.size = len(text)
      tar.addfile(info, io.BytesIO(text))
  return path


@pytest.mark.slow
def test_a_cifar100_archive_is_checked_and_extracted(tmp_path, monkeypatch):
  monkeypatch.delenv(CIFAR100.source_env, raising=False)
  good = _full_size_archive(str(tmp_path / 'good.tar.gz'))
  out = dataset.maybe_download_and_extract(str(tmp_path / 'd'), good,
                                           CIFAR100)
  assert sorted(os.listdir(out)) == sorted(
      ['train.bin', 'test.bin', 'fine_label_names.txt',
       'coarse_label_names.txt'])
  # the data set's own environment variable names its archive
  monkeypatch.setenv(CIFAR100.source_env, good)
  assert os.path.isdir(dataset.maybe_download_and_extract(
      str(tmp_path / 'e'), None, CIFAR100_COARSE))
  for archive, message in (
      (_full_size_archive(str(tmp_path / 'label.tar.gz'), bad_label_at=77),
       r'train.bin: record 77 has label byte 100, expected 0-99 '
       r'\(CIFAR-100\)'),
      (_full_size_archive(str(tmp_path / 'names.tar.gz'),
                          names_file_lines=['apple', 'pear']),
       r'fine_label_names.txt: lists 2 class names \(apple, pear...\), not '
       r"CIFAR-100's 100")):
    data_dir = str(tmp_path / os.path.basename(archive))[:-7]
    with pytest.raises(errors.DataSetError, match=message):
      dataset.maybe_download_and_extract(data_dir, archive, CIFAR100)
    assert not os.path.exists(data_dir)  # nothing half-written


def test_the_schedule_counts_the_data_sets_epochs():
  schedule = convnet.SCHEDULE._replace(train_size=1000, epochs_per_decay=2.0)
  rate = lambda step: float(convnet.learning_rate(step, 100, schedule))
  assert rate(19) == pytest.approx(0.1) and rate(20) == pytest.approx(0.01)
  flags = cifar10_train.FLAGS
  run_control_args = ['--dataset', 'cifar100', '--learning_rate', '0.05']
  flags.unparse_flags()
  flags(['x'] + run_control_args)
  run = config.resolve(flags, hardware.describe(), 1,
                       data_sets.get(flags.dataset), convnet,
                       cifar10_input)
  assert run.schedule == convnet.SCHEDULE._replace(learning_rate=0.05)
  assert run.schedule.train_size == CIFAR100.train_size
  flags.unparse_flags()


@pytest.fixture(scope='module')
def c100(tmp_path_factory):
  """A small CIFAR-100 and a 4-step convnet run on it."""
  data = str(tmp_path_factory.mktemp('c100_data'))
  write_cifar100(data)
  train = str(tmp_path_factory.mktemp('c100_train'))
  assert cifar10_train.main(conftest.train_args(data, train) + [
      '--dataset', 'cifar100', '--max_steps', '4',
      '--learning_rate', '0.05']) == 0
  return data, train


@pytest.mark.slow
def test_cifar100_trains_evaluates_exports_and_classifies(c100, tmp_path,
                                                          capsys):
  data, train = c100
  path = tf.train.latest_checkpoint(train)
  shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  key = [k for k in shapes if 'softmax_linear.Sweights' in k and
         k.startswith('model/')][0]
  assert shapes[key] == [192, 100]
  assert run_record.read(path) == ('cifar100', {
      'learning_rate': 0.05, 'epochs_per_decay': 350.0, 'decay_factor': 0.1,
      'moving_average_decay': 0.9999, 'train_size': 50000.0}, 'convnet')
  capsys.readouterr()
  assert cifar10_eval.main(['--dataset', 'cifar100', '--data_dir', data,
                            '--checkpoint_dir', train, '--eval_dir',
                            str(tmp_path / 'eval'), '--run_once']) == 0
  out = capsys.readouterr().out
  assert 'precision @ 1 = ' in out and '  apple ' in out and '  worm ' in out
  export_dir = str(tmp_path / 'model')
  assert cifar10_export.main(['--dataset', 'cifar100', '--checkpoint_dir',
                              train, '--export_dir', export_dir]) == 0
  loaded = tf.saved_model.load(export_dir)
  names = loaded.signatures['metadata']()['class_names'].numpy()
  assert [n.decode() for n in names] == list(CIFAR100.class_names)
  with open(os.path.join(export_dir, 'assets', 'labels.txt')) as f:
    assert f.read().split() == list(CIFAR100.class_names)
  probs = loaded.signatures['serving_default'](
      images=tf.zeros([2, 32, 32, 3], tf.uint8))['probabilities']
  assert probs.shape == (2, 100)
  image = str(tmp_path / 'x.png')
  tf.io.write_file(image, tf.io.encode_png(np.full((32, 32, 3), 90,
                                                   np.uint8)))
  capsys.readouterr()
  for where in (['--export_dir', export_dir],
                ['--dataset', 'cifar100', '--checkpoint_dir', train]):
    assert cifar10_classify.main([image, '--top_k', '2'] + where) == 0
    line = capsys.readouterr().out.strip()
    first = line.split(': ', 1)[1].split(' ')[0]
    assert first in CIFAR100.class_names, line


@pytest.mark.slow
def test_a_checkpoint_of_another_data_set_is_one_line(c100, tmp_path,
                                                      capsys):
  data, train = c100
  path = tf.train.latest_checkpoint(train)
  want = ('was trained on --dataset cifar100, not on --dataset %s: pass '
          '--dataset cifar100')
  runs = [
      (cifar10_eval.main, ['--data_dir', data, '--checkpoint_dir', train,
                           '--eval_dir', str(tmp_path / 'e'), '--run_once']),
      (cifar10_export.main, ['--checkpoint_dir', train, '--export_dir',
                             str(tmp_path / 'm')]),
      (cifar10_train.main, conftest.train_args(data, train) + [
          '--max_steps', '6'])]
  for main, args in runs:
    for other in ('cifar10', 'cifar100_coarse'):
      capsys.readouterr()
      status = run_control.run_main(main, args + ['--dataset', other])
      err = capsys.readouterr().err.strip().splitlines()
      assert status == 1 and len(err) == 1, err
      assert path in err[0] and want % other in err[0], err
  assert not os.path.exists(str(tmp_path / 'm'))
  assert not os.path.exists(str(tmp_path / 'e'))
  assert tf.train.latest_checkpoint(train) == path  # nothing written


@pytest.mark.slow
def test_a_resume_takes_a_new_schedule_with_a_note(c100, tmp_path, capsys):
  data, train = c100
  run = str(tmp_path / 'run')
  args = conftest.train_args(data, run) + ['--dataset', 'cifar100']
  assert cifar10_train.main(args + ['--max_steps', '2']) == 0
  capsys.readouterr()
  assert cifar10_train.main(args + ['--max_steps', '3', '--learning_rate',
                                    '0.02', '--decay_factor', '0.5']) == 0
  out = capsys.readouterr().out
  ckpt = os.path.join(run, 'ckpt-2')
  assert ('Note: %s was trained with --learning_rate 0.1; it goes on with '
          '0.02' % ckpt) in out
  assert ('Note: %s was trained with --decay_factor 0.1; it goes on with '
          '0.5' % ckpt) in out
  assert run_record.read(os.path.join(run, 'ckpt-3'))[1]['learning_rate'] \
      == 0.02


@pytest.mark.slow
@pytest.mark.parametrize('argv, message', [
    (['--dataset', 'svhm'], "flag --dataset=svhm: 'svhm': unknown; choose "
     'one of cifar10, cifar100, cifar100_coarse, svhn, svhn_extra, a folder '
     'of images (DIR/train/<class>/...), or a Python file'),
    (['--dataset', 'nowhere/my_set.py'], 'flag --dataset=nowhere/my_set.py: '
     'nowhere/my_set.py: no such file'),
    (['--dataset', 'tests/conftest.py'], 'flag --dataset=tests/conftest.py: '
     'tests/conftest.py defines no DATASET'),
    (['--learning_rate', '-1'], 'flag --learning_rate=-1.0: must be a '
     'positive float32 number'),
    (['--moving_average_decay', '1'], 'flag --moving_average_decay=1.0: '
     'must be below 1')])
def test_a_bad_data_set_or_schedule_flag_is_one_line(argv, message,
                                                     tmp_path):
  proc = subprocess.run(
      [sys.executable, 'cifar10_train.py', '--train_dir',
       str(tmp_path / 't'), '--data_dir', str(tmp_path / 'd')] + argv,
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  err = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(err) == 1 and message in err[0], err
  assert os.listdir(tmp_path) == []


MY_SET = """
# A data set of the user's: one file, nothing inside cifar10_toolkit/ edited.
from cifar10_toolkit import dataset

DATASET = dataset.DataSet(
    name='my_set', title='My set', image_shape=(24, 24, 3),
    class_names=('circle', 'square', 'star'), train_size=300, test_size=60,
    folder='my-set-bin', train_files=('train.bin',), test_files=('test.bin',),
    label_bytes=1, label_byte=0, names_file=None, archive='my-set.tar.gz',
    url='https://example.org/my-set.tar.gz', md5='0' * 32,
    source_env='MY_SET_DATA_SOURCE')
"""


@pytest.mark.slow
def test_a_data_set_of_ones_own_is_one_file(tmp_path, capsys):
  spec = tmp_path / 'my_set.py'
  spec.write_text(MY_SET)
  data = tmp_path / 'data' / 'my-set-bin'
  data.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for name, n in (('train.bin', 300), ('test.bin', 60)):
    labels = (np.arange(n) % 3).astype(np.uint8)
    images = rng.integers(0, 256, (n, 24 * 24 * 3), dtype=np.uint8)
    np.concatenate([labels[:, None], images], 1).tofile(str(data / name))
  train = str(tmp_path / 'train')
  args = ['--dataset', str(spec), '--data_dir', str(tmp_path / 'data')]
  assert cifar10_train.main(conftest.train_args(str(tmp_path / 'data'),
                                                train) + args[:2] + [
      '--max_steps', '3']) == 0
  shapes = tf.train.load_checkpoint(train).get_variable_to_shape_map()
  # 18x18 crops of 24x24 images (the tutorial's two pools leave 5x5x64), 3
  # classes
  table = convnet.layers(3, 18)
  for layer, (shape, _, _, _) in table.items():
    assert shapes['model/params/%s.Sweights/.ATTRIBUTES/VARIABLE_VALUE'
                  % layer] == shape
  assert table['softmax_linear'][0][-1] == 3
  assert (table['local3'][0] == [5 * 5 * 64, 384]
          or not conftest.is_tutorial_convnet())
  capsys.readouterr()
  assert cifar10_eval.main(args + ['--checkpoint_dir', train, '--eval_dir',
                                   str(tmp_path / 'eval'),
                                   '--run_once']) == 0
  out = capsys.readouterr().out
  assert '60 examples' in out and '  star ' in out, out


@pytest.mark.slow
def test_the_fully_connected_model_takes_a_data_set(c100, tmp_path, capsys):
  data, _ = c100
  logs = str(tmp_path / 'logs')
  assert run_fc_model.main(['--dataset', 'cifar100', '--data_dir', data,
                            '--train_dir', logs, '--max_steps', '3',
                            '--batch_size', '50', '--seed', '1']) == 0
  out = capsys.readouterr().out
  assert 'dataset = cifar100' in out and 'Test accuracy' in out
  path = glob.glob(os.path.join(logs, '*', 'ckpt-3.index'))[0][:-6]
  shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  assert shapes['model/params/layer2.Sweights/.ATTRIBUTES/VARIABLE_VALUE'] \
      == [120, 100]
  assert run_record.read(path) == ('cifar100', {}, 'convnet')  # (none named)
  assert restore_model.main(['--dataset', 'cifar100', '--data_dir', data,
                             '--train_dir', logs]) == 0
  assert 'Current step: 3' in capsys.readouterr().out
  status = run_control.run_main(restore_model.main, [
      '--data_dir', data, '--train_dir', logs])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1, err
  assert ('was trained on --dataset cifar100, not on --dataset cifar10'
          in err[0]), err


@pytest.mark.slow
def test_cifar10_described_in_ones_own_file_trains_the_same_bits(
    shared_bin_dir, tmp_path):
  spec = tmp_path / 'my_cifar10.py'
  spec.write_text('import dataclasses\nimport data_sets\nDATASET = '
                  "dataclasses.replace(data_sets.CIFAR10, name='my_cifar10')\n")
  weights = []
  for name in ('cifar10', str(spec)):
    train = str(tmp_path / ('run_' + os.path.basename(name)))
    assert cifar10_train.main(conftest.train_args(shared_bin_dir, train) + [
        '--dataset', name, '--max_steps', '3']) == 0
    weights.append(conftest.checkpoint_params(
        tf.train.latest_checkpoint(train))[0])
    assert run_record.read(tf.train.latest_checkpoint(train))[0] == \
        os.path.basename(name).replace('.py', '')
  assert weights[0].keys() == weights[1].keys()
  for k in weights[0]:
    np.testing.assert_array_equal(weights[0][k], weights[1][k])
