"""Nothing lost outside the run either (README: "What survives what"):
foreign checkpoints, lone workers, hang-ups, short data, one-line errors,
leftovers, an evaluator that retries what was repaired, and smaller faults.
Multi-process tests are bounded in time."""

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cifar10_classify
import cifar10_export
from cifar10_toolkit import console
from cifar10_toolkit import dataset
import cifar10_multi_gpu_train
import cifar10_train
from cifar10_toolkit import errors
from cifar10_toolkit import train_loop
import cifar10_input
import convnet
import data_helpers
import restore_model
import run_fc_model
from cifar10_toolkit import checkpoints
from cifar10_toolkit import run_control
from cifar10_toolkit import evaluation
from cifar10_toolkit import images
from data_sets import CIFAR10
from conftest import (ROOT, free_ports, start_workers, train_args,
                      write_bin, write_py)


def _one_line_error(capsys, status, expected_status=1):
  err = capsys.readouterr().err.strip().splitlines()
  assert status == expected_status and len(err) == 1, err
  return err[0]


def _files(folder):
  """name -> (size, mtime) of every file under folder."""
  out = {}
  for root, _, names in os.walk(folder):
    for n in names:
      st = os.stat(os.path.join(root, n))
      out[os.path.relpath(os.path.join(root, n), folder)] = (
          st.st_size, st.st_mtime_ns)
  return out


# --- 1. another run's checkpoints are neither used nor deleted --------------

@pytest.mark.slow
@pytest.mark.parametrize('absolute', [True, False])
def test_index_naming_another_folder_deletes_nothing_there(
    shared_bin_dir, tmp_path, capsys, absolute):
  other, new = str(tmp_path / 'other'), str(tmp_path / 'new')
  save_often = ['--steps_per_loop', '1', '--save_checkpoint_secs', '0.000001']
  assert cifar10_train.main(train_args(shared_bin_dir, other) + save_often +
                            ['--max_steps', '4']) == 0
  shutil.copytree(other, new)
  os.remove(os.path.join(new, checkpoints.LOCK_FILE))
  # the copy's index names the other folder's checkpoints
  names = ['ckpt-%d' % s for s in (2, 3, 4)]
  ref = (lambda n: os.path.join(other, n)) if absolute else (
      lambda n: os.path.join('..', 'other', n))
  with open(os.path.join(new, 'checkpoint'), 'w') as f:
    f.write('model_checkpoint_path: "%s"\n' % ref(names[-1]) + ''.join(
        'all_model_checkpoint_paths: "%s"\n' % ref(n) for n in names))
  before = _files(other)
  capsys.readouterr()
  assert cifar10_train.main(train_args(shared_bin_dir, new) + save_often +
                            ['--max_steps', '12']) == 0
  out = capsys.readouterr().out
  assert 'lists checkpoints outside %s' % new in out
  assert 'Resuming from %s at step 4' % os.path.join(new, 'ckpt-4') in out
  assert _files(other) == before  # nothing read-write, nothing deleted there
  # its own checkpoints rotate as usual (five kept) and the index is its own
  own = sorted(int(n[5:-6]) for n in os.listdir(new)
               if re.match(r'^ckpt-\d+\.index$', n))
  assert own == [8, 9, 10, 11, 12]
  state = tf.train.get_checkpoint_state(new)
  assert all(os.path.dirname(os.path.join(new, p)) == new
             for p in state.all_model_checkpoint_paths)


# --- 2. a stop signal while the run starts is not lost --------------------

def test_signal_before_training_is_not_lost(shared_bin_dir, tmp_path):
  """A stop signal that comes while the run starts ends it at the first
  chance (saved), instead of training on to the end."""
  d = str(tmp_path / 't')
  run_control.record_stop_signals()
  try:
    os.kill(os.getpid(), signal.SIGTERM)
    status = cifar10_train.main(train_args(shared_bin_dir, d) +
                                ['--max_steps', '500'])
  finally:
    run_control._pending.clear()
    for s in run_control.STOP_SIGNALS:
      signal.signal(s, signal.SIG_DFL if s != signal.SIGINT
                    else signal.default_int_handler)
  assert status == 143
  assert int(tf.train.latest_checkpoint(d).rsplit('-', 1)[1]) == 1


# --- 3. hang-ups (SIGHUP: tests/test_convnet.py; a closed console:
#        tests/test_faults.py) ------------------------------------------------


# --- 4. short, long and fabricated data ------------------------------------

def _cut(path, records):
  with open(path, 'r+b') as f:
    f.truncate(records * CIFAR10.record_bytes)


@pytest.mark.parametrize('script', ['cifar10_train.py', 'run_fc_model.py'])
def test_cut_binary_file_is_named_before_training(tmp_path, script):
  d = str(tmp_path)
  write_bin(d, per_file=40)
  path = os.path.join(d, CIFAR10.folder, 'data_batch_3.bin')
  _cut(path, 20)
  p = subprocess.run([sys.executable, script, '--data_dir', d, '--train_dir',
                      str(tmp_path / 'run'), '--max_steps', '2'], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 1
  assert p.stderr.strip().splitlines() == [
      '%s: error: %s: 20 records, where the other training files hold 40 (a '
      'cut or padded file; the official files hold 10000 each)' % (
          script, path)]
  assert not os.path.exists(str(tmp_path / 'run' / 'checkpoint'))


def test_official_counts_are_exact():
  check = dataset.check_record_counts
  names = CIFAR10.train_files
  official = dict.fromkeys(names + (CIFAR10.test_files[0],), 10000)
  check('d', official, CIFAR10)
  for name, n in [('data_batch_1.bin', 5000), ('data_batch_5.bin', 60000),
                  ('test_batch.bin', 9999)]:
    with pytest.raises(errors.DataSetError,
                       match=r'^d/%s: %d records' % (name, n)):
      check('d', dict(official, **{name: n}), CIFAR10)


def _pickle_batch(path, data, labels):
  with open(path, 'wb') as f:
    pickle.dump({b'data': data, b'labels': labels}, f, protocol=2)


class _Declared:
  """Pickles as a call of numpy.ndarray(shape, dtype): memory the file does
  not hold."""

  def __init__(self, shape, dtype='u1'):
    self.shape, self.dtype = shape, dtype

  def __reduce__(self):
    return (np.ndarray, (self.shape, self.dtype))


@pytest.mark.parametrize('rows,says', [
    (60000, 'refused, it declares an array of (60000, 3072) (184320000 '
     'bytes), more than a CIFAR-10 file holds'),
    (15000, '15000 records, more than the official 10000 a file (a padded or '
             'repeated file)')])
def test_fabricated_pickle_of_many_images_is_named(tmp_path, capsys, rows,
                                                   says):
  """A small pickle that makes numpy.ndarray((rows, 3072)) of nothing."""
  write_py(str(tmp_path), per_file=20)
  path = os.path.join(str(tmp_path), 'cifar-10-batches-py', 'data_batch_2')
  _pickle_batch(path, _Declared((rows, 3072)), [1] * rows)
  status = run_control.run_main(run_fc_model.main, [
      '--data_dir', str(tmp_path), '--train_dir', str(tmp_path / 'r'),
      '--max_steps', '1', '--batch_size', '10'])
  assert 'error: %s: %s' % (path, says) in _one_line_error(capsys, status)


def test_pickle_asking_for_57_gb_is_refused_by_size(tmp_path):
  path = str(tmp_path / 'data_batch_1')
  _pickle_batch(path, _Declared((10**6, 3072), 'f8'), [0])
  assert os.path.getsize(path) < 1000
  with pytest.raises(errors.DataSetError,
                     match=r'refused, it declares an array of \(1000000, '
                     r'3072\) \(24576000000 bytes\)'):
    data_helpers._read_pickle_batch(path)


@pytest.mark.parametrize('labels,what',
                         [([float('nan')] * 20, 'holds float64 values'),
                          (b'\x01' * 20, 'is a bytes'),
                          (None, 'is a NoneType'),
                          ([True] * 20, 'holds bool values'),
                          ([1, None] * 10, 'holds mixed values')])
def test_bad_pickle_labels_are_one_line(tmp_path, capsys, labels, what):
  write_py(str(tmp_path), per_file=20)
  path = os.path.join(str(tmp_path), 'cifar-10-batches-py', 'data_batch_4')
  _pickle_batch(path, np.zeros((20, 3072), np.uint8), labels)
  status = run_control.run_main(run_fc_model.main, [
      '--data_dir', str(tmp_path), '--train_dir', str(tmp_path / 'r'),
      '--max_steps', '1', '--batch_size', '10'])
  assert "error: %s: 'labels' %s" % (path, what) in _one_line_error(
      capsys, status)


# --- 5. one line where one line is promised --------------------------------

@pytest.mark.parametrize('config,says', [
    ({'cluster': {'worker': ['a:1', 'b:2']},
      'task': {'type': 'worker', 'index': '0'}}, 'the index a number'),
    ({'cluster': {'worker': ['a:1', 'b:2']}, 'task': {'type': 'worker'}},
     'the index a number'),
    ({'cluster': {'worker': ['a:1', 'b:2']}, 'task': 'worker'},
     '"task" must be'),
    ({'cluster': {'worker': 'a:1,b:2'}, 'task': {'type': 'worker',
                                                  'index': 0}},
     '"cluster" must map each task type to a list'),
    ({'cluster': {'worker': ['a:1']}, 'task': {'type': 'worker',
                                               'index': 3}},
     'task worker 3 is not in the cluster'),
    ('{not json', 'it is not JSON')])
def test_bad_tf_config_is_one_line(monkeypatch, capsys, config, says):
  monkeypatch.setenv('TF_CONFIG', config if isinstance(config, str)
                     else json.dumps(config))
  status = run_control.run_main(cifar10_multi_gpu_train.main,
                              ['--strategy', 'multi_worker'])
  assert says in _one_line_error(capsys, status)


def test_restore_model_walks_past_a_garbage_index(tmp_path, capsys):
  write_py(str(tmp_path / 'data'), per_file=20)
  args = ['--data_dir', str(tmp_path / 'data'), '--train_dir',
          str(tmp_path / 'logs')]
  assert run_fc_model.main(args + ['--max_steps', '3', '--batch_size',
                                   '10']) == 0
  (run,) = os.listdir(str(tmp_path / 'logs'))
  index = str(tmp_path / 'logs' / run / 'checkpoint')
  with open(index, 'wb') as f:
    f.write(b'\x8c\x00garbage\xff')
  capsys.readouterr()
  assert run_control.run_main(restore_model.main, args) == 0
  out = capsys.readouterr().out
  assert 'Note: index file %s is unreadable' % index in out
  assert 'Current step: 3\n' in out
  # and a damaged newest checkpoint is walked back past, named
  with open(str(tmp_path / 'logs' / run / 'ckpt-3.index'), 'wb') as f:
    f.write(b'junk')
  assert run_control.run_main(restore_model.main, args) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'no checkpoint under' in err[0] and \
      'ckpt-3' in err[0]


@pytest.fixture(scope='module')
def exported(shared_bin_dir, tmp_path_factory):
  d = tmp_path_factory.mktemp('exp')
  train = str(d / 'train')
  assert cifar10_train.main(train_args(shared_bin_dir, train) +
                            ['--max_steps', '2']) == 0
  return train, d


@pytest.mark.slow
def test_classify_with_a_truncated_model_is_one_line(exported, tmp_path,
                                                     capsys):
  train, _ = exported
  model = str(tmp_path / 'model')
  assert cifar10_export.main(['--checkpoint_dir', train, '--export_dir',
                              model]) == 0
  data = os.path.join(model, 'variables', 'variables.data-00000-of-00001')
  with open(data, 'r+b') as f:
    f.truncate(os.path.getsize(data) // 2)
  image = str(tmp_path / 'a.png')
  tf.io.write_file(image, tf.io.encode_png(tf.zeros([32, 32, 3], tf.uint8)))
  capsys.readouterr()
  status = run_control.run_main(cifar10_classify.main, [image, '--export_dir',
                                                      model])
  assert 'is not a model exported by cifar10_export.py' in _one_line_error(
      capsys, status)


# --- 6. leftovers ------------------------------------------------------------

def test_export_gets_the_umask_mode_and_removes_dead_exports(exported,
                                                             tmp_path):
  train, _ = exported
  stale = tmp_path / '.export-999999999-abc'  # a pid no process has
  stale.mkdir()
  (stale / 'saved_model.pb').write_bytes(b'half')
  old = os.umask(0o022)
  try:
    assert cifar10_export.main(['--checkpoint_dir', train, '--export_dir',
                                str(tmp_path / 'm')]) == 0
    # once 'Exported ...' is said, a late Ctrl-C cannot make it a failure
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    os.umask(old)
    signal.signal(signal.SIGINT, signal.default_int_handler)
  assert os.stat(str(tmp_path / 'm')).st_mode & 0o777 == 0o755
  assert sorted(os.listdir(str(tmp_path))) == ['m']


@pytest.mark.slow
def test_sigterm_during_export_leaves_nothing(exported, tmp_path):
  train, _ = exported
  proc = subprocess.Popen([
      sys.executable, '-c',
      'import sys, time, signal, os, cifar10_export, tensorflow as tf\n'
      'from cifar10_toolkit import run_control\n'
      'save = tf.saved_model.save\n'
      'def slow(*a, **k):\n'
      '  save(*a, **k); print("saved", flush=True); time.sleep(60)\n'
      'tf.saved_model.save = slow\n'
      'sys.argv = ["cifar10_export.py"]\n'
      'sys.exit(run_control.run_main(cifar10_export.main, ["--checkpoint_dir",'
      ' %r, "--export_dir", %r]))' % (train, str(tmp_path / 'm'))
  ],
                          cwd=ROOT,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True)
  try:
    assert proc.stdout.readline() == 'saved\n'
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 143
  assert err.strip().splitlines()[-1] == (
      'cifar10_export.py: stopped by SIGTERM; nothing was left half-written')
  assert os.listdir(str(tmp_path)) == []


# --- 7. the evaluator retries a checkpoint once it is repaired ---------------

@pytest.mark.slow
def test_evaluator_retries_a_repaired_checkpoint(shared_bin_dir, tmp_path,
                                                 capsys):
  d = str(tmp_path / 't')
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '3', '--steps_per_loop', '1',
      '--save_checkpoint_secs', '0.000001']) == 0
  data = os.path.join(d, 'ckpt-3.data-00000-of-00001')
  good = open(data, 'rb').read()
  with open(data, 'r+b') as f:
    f.truncate(100)
  ev = evaluation.Evaluator(shared_bin_dir, 'test', 200, CIFAR10,
                            convnet, cifar10_input)
  reported = {}
  path, step, content = evaluation.newest_readable(ev, d, None, reported)
  assert (path, step) == (os.path.join(d, 'ckpt-2'), 2)
  assert content == evaluation.content_id(path)
  done = (path, content)
  nothing = (None, None, None)
  assert evaluation.newest_readable(ev, d, done, reported) == nothing
  assert capsys.readouterr().out.count('Skipping checkpoint') == 1  # once
  with open(data, 'wb') as f:  # repaired (restored from a backup)
    f.write(good)
  path, step, content = evaluation.newest_readable(ev, d, done, reported)
  assert (path, step) == (os.path.join(d, 'ckpt-3'), 3)
  # the folder emptied and trained again to step 3: the same path, other
  # weights, so the watching evaluator takes it (it goes by content)
  done = (path, content)
  assert evaluation.newest_readable(ev, d, done, reported) == nothing
  shutil.rmtree(d)
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '3', '--seed', '99']) == 0
  again = evaluation.newest_readable(ev, d, done, reported)
  assert again[:2] == (path, 3) and again[2] != content


# --- 8. smaller faults ------------------------------------------------------

def test_classify_a_folder_says_so(tmp_path, capsys):
  with pytest.raises(images.ImageError,
                     match=r': a folder, not an image file$'):
    images.read(str(tmp_path), (32, 32, 3))


def test_symlink_loop_as_train_dir(shared_bin_dir, tmp_path, capsys):
  loop = str(tmp_path / 'loop')
  os.symlink(loop, loop)
  status = run_control.run_main(cifar10_train.main,
                              train_args(shared_bin_dir, loop))
  assert 'is a symbolic link that leads nowhere' in _one_line_error(
      capsys, status)


def test_batches_folder_that_is_a_file(tmp_path, capsys):
  (tmp_path / CIFAR10.folder).write_text('not a folder')
  archive = str(tmp_path / 'archive.tar.gz')
  open(archive, 'wb').close()
  with pytest.raises(errors.DataSetError,
                     match=r'cifar-10-batches-bin: a file, not the data set'):
    dataset.maybe_download_and_extract(str(tmp_path), archive, CIFAR10)
  assert 'Extracting' not in capsys.readouterr().out  # nothing extracted


def test_slow_steps_make_shorter_calls():
  """A stop waits at most about CALL_SECS, whatever the precision."""
  clock = console.StepClock(0, 128, 10)
  assert clock.steps_within(train_loop.CALL_SECS) > 10**6  # unknown yet
  clock.call_took(3, 6.0)  # 2 s a step
  assert clock.steps_within(train_loop.CALL_SECS) == \
      train_loop.CALL_SECS // 2
  clock.call_took(2, 120.0)  # a minute a step
  assert clock.steps_within(train_loop.CALL_SECS) == 1


# --- 2. a cluster that never forms: a bounded wait, signals honoured --------

def _lone_worker(data_dir, tmp_path, *extra):
  ports = free_ports(2)
  cluster = {'worker': ['127.0.0.1:%d' % p for p in ports]}
  env = dict(os.environ, PYTHONUNBUFFERED='1', TF_CONFIG=json.dumps(
      {'cluster': cluster, 'task': {'type': 'worker', 'index': 0}}))
  proc = subprocess.Popen(
      [sys.executable, 'cifar10_multi_gpu_train.py', '--strategy',
       'multi_worker'] + train_args(data_dir, str(tmp_path / 't')) +
      list(extra), cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  return proc, ports


@pytest.mark.slow
def test_lone_worker_gives_up_naming_the_missing_task(shared_bin_dir,
                                                      tmp_path):
  proc, ports = _lone_worker(shared_bin_dir, tmp_path,
                             '--cluster_wait_secs', '3')
  try:
    out, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 1, err
  assert 'Waiting up to 3 s for the cluster: this is worker 0' in out
  assert err.strip().splitlines() == [
      'cifar10_multi_gpu_train.py: error: the cluster did not come together '
      'within 3 s (--cluster_wait_secs): no answer from worker 1 '
      '(127.0.0.1:%d)' % ports[1]]


@pytest.mark.slow
def test_worker_whose_peer_port_is_taken_by_another_program(shared_bin_dir,
                                                            tmp_path):
  """The peer's port answers, but not as a task of this cluster would."""
  import socket
  proc, ports = _lone_worker(shared_bin_dir, tmp_path,
                             '--cluster_wait_secs', '3')
  with socket.socket() as squatter:
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(('127.0.0.1', ports[1]))
    squatter.listen(8)
    try:
      _, err = proc.communicate(timeout=120)
    finally:
      proc.kill()
  assert proc.returncode == 1
  assert err.strip().splitlines()[-1].endswith(
      'no answer from worker 1 (127.0.0.1:%d)' % ports[1])


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_lone_worker_honours_signals_while_waiting(shared_bin_dir, tmp_path,
                                                   sig):
  import time
  proc, _ = _lone_worker(shared_bin_dir, tmp_path)
  try:
    assert 'Waiting up to 300 s for the cluster' in proc.stdout.readline()
    began = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
  finally:
    proc.kill()
  assert time.time() - began < 10
  assert proc.returncode == 128 + sig
  assert err.strip().splitlines() == [
      'cifar10_multi_gpu_train.py: stopped by %s; nothing was left '
      'half-written' % signal.Signals(sig).name]
  assert not os.path.exists(str(tmp_path / 't' / 'checkpoint'))


# --- 5. a peer lost during training: which one, and what was saved ---------

@pytest.mark.slow
def test_a_lost_peer_is_named_with_the_checkpoint_to_resume(shared_bin_dir,
                                                            tmp_path):
  d = str(tmp_path / 't')
  procs = start_workers(shared_bin_dir, d, 100000, free_ports(2),
                   '--save_checkpoint_secs', '0.000001')
  try:
    for line in procs[1].stdout:
      if 'step 20, loss' in line:
        break
    procs[1].kill()
    out, _ = procs[0].communicate(timeout=180)
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode == 1
  last = out.strip().splitlines()[-1]
  assert re.match(r'^cifar10_multi_gpu_train\.py: error: the cluster lost '
                  r'worker 1 during training \(\w+Error[^)]*\); the last '
                  r'checkpoint is %s/ckpt-\d+: restart every task to resume '
                  r'from it$' % re.escape(d), last), last


@pytest.mark.slow
def test_sigterm_to_a_worker_in_its_first_seconds_stops_both(shared_bin_dir,
                                                             tmp_path):
  """Sent as training starts: both workers stop after the same step, save,
  and exit 143 (not train on to the end)."""
  d = str(tmp_path / 't')
  procs = start_workers(shared_bin_dir, d, 5000, free_ports(2))
  seen = []
  try:
    for line in procs[1].stdout:
      seen.append(line)
      if line.startswith('Training from step 0'):
        break
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  outs[1] = ''.join(seen) + outs[1]
  assert [p.returncode for p in procs] == [143, 143], outs
  step = int(tf.train.latest_checkpoint(d).rsplit('-', 1)[1])
  assert step < 5000 and 'saved checkpoint %s/ckpt-%d' % (d, step) in outs[0]
