"""Nothing lost, nothing run, nothing shared by accident (README: "What
survives what"): damaged checkpoints, crashes, a second trainer, hostile
pickles, full or read-only disks, bad flags."""

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

import cifar10_eval
import cifar10_multi_gpu_train
import cifar10_train
import data_helpers
from cifar10_toolkit import errors
import run_fc_model
from cifar10_toolkit import run_control
from conftest import (ROOT, free_ports, start_script, start_workers,
                      train_args, wait_for, write_py)


def _checkpoints(d, seed_flag=()):
  """Trains 3 steps saving after each: ckpt-1, ckpt-2, ckpt-3."""
  assert cifar10_train.main(train_args(d[0], d[1]) + [
      '--max_steps', '3', '--steps_per_loop', '1', '--save_checkpoint_secs',
      '0.000001'] + list(seed_flag)) == 0
  return sorted(os.listdir(d[1]))


def _listing(d):
  return {n: os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)
          if n.startswith('ckpt-')}


def _steps(d):
  return [int(p.rsplit('-', 1)[1]) for p in
          tf.train.get_checkpoint_state(d).all_model_checkpoint_paths]


def _seed(path):
  return int(tf.train.load_checkpoint(path).get_tensor(
      'state/seed/.ATTRIBUTES/VARIABLE_VALUE'))


def _one_error_line(err):
  lines = [l for l in err.strip().splitlines()
           if not l.startswith(('WARNING:', 'I0000', 'E0000', 'W0000'))]
  assert len(lines) == 1 and 'Traceback' not in err, err
  return lines[0]


@pytest.fixture
def run3(shared_bin_dir, tmp_path):
  d = str(tmp_path / 't')
  _checkpoints((shared_bin_dir, d))
  assert _steps(d) == [1, 2, 3]
  return shared_bin_dir, d


# --- 1. a missing or damaged newest checkpoint --------------------------------

@pytest.mark.parametrize('damage', ['delete_index', 'delete_all', 'truncate',
                                    'zero_fill'])
@pytest.mark.slow
def test_damaged_newest_checkpoint_resumes_from_the_previous_one(
    run3, capsys, damage):
  data, d = run3
  newest = os.path.join(d, 'ckpt-3')
  data_file = newest + '.data-00000-of-00001'
  if damage == 'delete_index':
    os.remove(newest + '.index')
  elif damage == 'delete_all':
    os.remove(newest + '.index')
    os.remove(data_file)
  elif damage == 'truncate':
    os.truncate(data_file, os.path.getsize(data_file) // 2)
  else:
    size = os.path.getsize(data_file)
    with open(data_file, 'r+b') as f:
      f.write(b'\0' * size)
  capsys.readouterr()
  # --seed 99 is ignored: the run keeps the seed its checkpoint holds
  assert cifar10_train.main(train_args(data, d) + ['--max_steps', '4',
                                                    '--seed', '99']) == 0
  out = capsys.readouterr().out
  assert 'Skipping checkpoint %s: ' % newest in out
  assert 'Resuming from %s at step 2' % os.path.join(d, 'ckpt-2') in out
  assert _steps(d) == [1, 2, 4]
  assert os.path.exists(os.path.join(d, 'ckpt-1.index'))
  assert _seed(os.path.join(d, 'ckpt-4')) == 3
  if damage in ('truncate', 'zero_fill'):  # set aside, not deleted
    aside = [n for n in os.listdir(d) if n.startswith('unreadable-')]
    assert len(aside) == 1 and sorted(os.listdir(os.path.join(d, aside[0]))) \
        == ['ckpt-3.data-00000-of-00001', 'ckpt-3.index']


@pytest.mark.slow
def test_no_readable_checkpoint_is_one_error_and_changes_nothing(run3,
                                                                 capsys):
  data, d = run3
  for n in os.listdir(d):
    if '.data-' in n:
      os.truncate(os.path.join(d, n), 10)
  before = _listing(d)
  status = run_control.run_main(cifar10_train.main, train_args(data, d) + [
      '--max_steps', '5'])
  line = _one_error_line(capsys.readouterr().err)
  assert status == 1 and 'no checkpoint in %s can be read' % d in line
  assert _listing(d) == before


@pytest.mark.slow
def test_garbage_index_file_is_named_and_the_files_used(run3, capsys):
  data, d = run3
  with open(os.path.join(d, 'checkpoint'), 'wb') as f:
    f.write(b'\x9c\xff garbage')
  capsys.readouterr()
  assert cifar10_train.main(train_args(data, d) + ['--max_steps', '4']) == 0
  out = capsys.readouterr().out
  assert 'index file %s is unreadable' % os.path.join(d, 'checkpoint') in out
  assert 'Resuming from %s at step 3' % os.path.join(d, 'ckpt-3') in out
  assert _steps(d) == [1, 2, 3, 4]


@pytest.mark.slow
def test_evaluator_walks_back_past_a_damaged_checkpoint(run3, tmp_path,
                                                        capsys):
  data, d = run3
  os.truncate(os.path.join(d, 'ckpt-3.data-00000-of-00001'), 100)
  before = _listing(d)
  assert cifar10_eval.main(['--checkpoint_dir', d, '--eval_dir',
                            str(tmp_path / 'e'), '--data_dir', data,
                            '--run_once']) == 0
  out = capsys.readouterr().out
  assert 'Skipping checkpoint %s' % os.path.join(d, 'ckpt-3') in out
  assert '(step 2)' in out
  assert _listing(d) == before  # the evaluator changes nothing


def test_checkpoint_of_the_other_model_is_named(shared_bin_dir, tmp_path,
                                                capsys):
  fc_dir = str(tmp_path / 'fc')
  assert run_fc_model.main(['--data_dir', shared_bin_dir, '--train_dir',
                            fc_dir, '--max_steps', '2', '--batch_size',
                            '50']) == 0
  run = os.path.join(fc_dir, os.listdir(fc_dir)[0])
  capsys.readouterr()
  status = run_control.run_main(cifar10_eval.main, [
      '--checkpoint_dir', run, '--eval_dir', str(tmp_path / 'e'),
      '--data_dir', shared_bin_dir, '--run_once'])
  line = _one_error_line(capsys.readouterr().err)
  assert status == 1 and 'is a fully connected checkpoint, not a convnet ' \
      'one' in line
  before = _listing(run)
  status = run_control.run_main(cifar10_train.main, train_args(
      shared_bin_dir, run) + ['--max_steps', '5'])
  line = _one_error_line(capsys.readouterr().err)
  assert status == 1 and 'not a convnet one' in line
  assert _listing(run) == before


# --- 4. debris of interrupted saves -----------------------------------------

@pytest.mark.slow
def test_leftovers_of_an_interrupted_save_are_removed(run3, capsys):
  data, d = run3
  os.makedirs(os.path.join(d, 'ckpt-9_temp'))
  with open(os.path.join(d, 'ckpt-9_temp', 'part-00000-of-00001.data-00000-'
                         'of-00001'), 'wb') as f:
    f.write(b'\1' * 1000)
  with open(os.path.join(d, 'checkpoint.tmp1f2e3d'), 'w') as f:
    f.write('model_checkpoint_path: "ckpt-9"\n')
  # a complete checkpoint the index does not list (killed before registering)
  with open(os.path.join(d, 'checkpoint'), 'w') as f:
    f.write('model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: '
            '"ckpt-2"\nall_model_checkpoint_paths: "ckpt-3"\n')
  capsys.readouterr()
  assert cifar10_train.main(train_args(data, d) + ['--max_steps', '4']) == 0
  out = capsys.readouterr().out
  assert 'Removed the leftovers of an interrupted save in %s: ' \
      'checkpoint.tmp1f2e3d, ckpt-9_temp' % d in out
  assert not os.path.exists(os.path.join(d, 'ckpt-9_temp'))
  assert not os.path.exists(os.path.join(d, 'checkpoint.tmp1f2e3d'))
  assert _steps(d) == [1, 2, 3, 4]  # ckpt-1 listed again, to rotate out


@pytest.mark.slow
def test_resume_writes_no_extra_checkpoint_for_a_slow_first_step(run3):
  data, d = run3
  assert cifar10_train.main(train_args(data, d) + [
      '--max_steps', '6', '--save_checkpoint_secs', '1000']) == 0
  assert _steps(d) == [1, 2, 3, 6]


# --- 3. one trainer per train_dir -------------------------------------------

@pytest.mark.slow
def test_second_trainer_on_the_same_folder_stops_at_once(shared_bin_dir,
                                                         tmp_path, capsys):
  d = str(tmp_path / 't')
  first = start_script(['cifar10_train.py'] + train_args(shared_bin_dir, d) + [
      '--steps_per_loop', '5', '--save_checkpoint_secs', '1'])
  try:
    wait_for(first, r'step 10, loss')
    before = _listing(d)
    for main in (cifar10_train.main, cifar10_multi_gpu_train.main):
      began = time.time()
      status = run_control.run_main(main, train_args(shared_bin_dir, d) + [
          '--max_steps', '100000'])
      line = _one_error_line(capsys.readouterr().err)
      assert status == 1 and time.time() - began < 10
      assert ('--train_dir %s is in use by cifar10_train.py (pid %d on ' %
              (d, first.pid)) in line
    after = _listing(d)
    assert all(after.get(n) == s for n, s in before.items()
               if int(n.split('-')[1].split('.')[0]) >= max(_steps(d)) - 2)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
  finally:
    first.kill()
  assert first.returncode == 130


@pytest.mark.slow
def test_a_killed_trainers_lock_is_not_an_obstacle(shared_bin_dir, tmp_path,
                                                   capsys):
  d = str(tmp_path / 't')
  first = start_script(['cifar10_train.py'] + train_args(shared_bin_dir, d) + [
      '--steps_per_loop', '5', '--save_checkpoint_secs', '0.5'])
  try:
    wait_for(first, r'step 20, loss')
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  finally:
    first.kill()
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '40']) == 0
  assert 'Resuming from' in capsys.readouterr().out


# --- 2. pickles run no code --------------------------------------------------

class _Payload:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, ('touch %s' % self.path,))


@pytest.mark.parametrize('name', ['data_batch_1', 'batches.meta'])
def test_a_malicious_pickle_runs_nothing(tmp_path, name):
  write_py(str(tmp_path), per_file=20)
  marker = tmp_path / 'pwned'
  with open(tmp_path / 'cifar-10-batches-py' / name, 'wb') as f:
    pickle.dump({b'data': _Payload(str(marker)), b'labels': [1],
                 b'label_names': _Payload(str(marker))}, f, protocol=2)
  with pytest.raises(data_helpers.DataSetError) as e:
    data_helpers.load_data(str(tmp_path))
  assert not marker.exists()
  assert name in str(e.value) and 'posix.system' in str(e.value)
  assert '\n' not in str(e.value)


def test_official_pickles_still_load(tmp_path):
  write_py(str(tmp_path), per_file=20)
  data = data_helpers.load_data(str(tmp_path))
  assert data['images_train'].shape == (100, 3072)
  assert list(data['classes'])[:2] == ['airplane', 'automobile']


# --- 5. one-line errors --------------------------------------------------------

def _file(tmp_path):
  path = tmp_path / 'a_file'
  path.write_text('not a folder')
  return str(path)


@pytest.mark.parametrize('script', ['train', 'multi', 'fc', 'eval'])
def test_a_folder_flag_naming_a_file(shared_bin_dir, tmp_path, capsys,
                                     script):
  f = _file(tmp_path)
  main, args, flag = {
      'train': (cifar10_train.main, train_args(shared_bin_dir,
                                               f), '--train_dir'),
      'multi': (cifar10_multi_gpu_train.main, train_args(shared_bin_dir,
                                                         f), '--train_dir'),
      'fc':
          (run_fc_model.main, ['--data_dir', shared_bin_dir, '--train_dir',
                               f], '--train_dir'),
      'eval': (cifar10_eval.main,
               ['--data_dir', shared_bin_dir, '--eval_dir', f,
                '--run_once'], '--eval_dir')
  }[script]
  status = run_control.run_main(main, args)
  line = _one_error_line(capsys.readouterr().err)
  assert status == 1 and '%s %s is a file, not a folder' % (flag, f) in line


@pytest.mark.parametrize('argv', [
    ['cifar10_train.py', '--seed', str(2**40)],
    ['cifar10_multi_gpu_train.py', '--logical_devices', '100000'],
    ['run_fc_model.py', '--hidden1', str(10**12)],
    ['run_fc_model.py', '--seed', '-1']])
def test_out_of_range_flags(tmp_path, argv):
  flag = argv[1]
  p = subprocess.run([sys.executable] + argv + ['--train_dir',
                                                 str(tmp_path / 'runs')],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  line = _one_error_line(p.stderr)
  assert p.returncode == 2 and flag in line and 'in the range' in line
  assert not (tmp_path / 'runs').exists()


def test_logical_devices_bounded_by_the_machine(shared_bin_dir, tmp_path,
                                                capsys):
  status = run_control.run_main(cifar10_multi_gpu_train.main, train_args(
      shared_bin_dir, str(tmp_path / 't')) + ['--logical_devices', '64'])
  line = _one_error_line(capsys.readouterr().err)
  assert status == 1 and '--logical_devices 64' in line and 'at most' in line


def test_ctrl_c_while_starting_is_one_line(tmp_path):
  proc = subprocess.Popen([sys.executable, 'cifar10_train.py', '--train_dir',
                           str(tmp_path / 't'), '--data_dir',
                           str(tmp_path / 'd')], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    time.sleep(0.8)  # importing TensorFlow
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
  finally:
    proc.kill()  # never left running, whatever failed
  assert proc.returncode == 130, (out, err)
  assert 'Traceback' not in err
  assert err.strip().splitlines()[-1:] == ['cifar10_train.py: interrupted'], (
      out, err)
  assert not (tmp_path / 't').exists()  # nothing written


def _in_mount_namespace(script):
  """Runs a shell script as root in a private mount namespace (its mounts
  vanish with it); skips where that is not possible."""
  if os.geteuid() != 0 or not shutil.which('unshare'):
    pytest.skip('needs root and unshare for a private tmpfs mount')
  probe = subprocess.run(['unshare', '-m', 'true'], capture_output=True)
  if probe.returncode:
    pytest.skip('unshare -m not permitted here')
  return subprocess.run(['unshare', '-m', 'sh', '-c', script], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_read_only_train_dir_and_data_dir(shared_bin_dir, tmp_path):
  ro = str(tmp_path / 'ro')
  os.makedirs(ro)
  py = sys.executable
  p = _in_mount_namespace(
      'mount -t tmpfs -o ro,size=1m tmpfs {ro} && '
      '{py} cifar10_train.py --train_dir {ro}/t --data_dir {data}; '
      'echo "== $?"; {py} cifar10_train.py --train_dir {tmp}/t2 '
      '--data_dir {ro}/data --data_source {tmp}/none.tar.gz; echo "== $?"'
      .format(ro=ro, py=py, data=shared_bin_dir, tmp=tmp_path))
  errs = p.stderr.split('\n')
  lines = [l for l in errs if ': error: ' in l]
  assert 'Traceback' not in p.stderr, p.stderr
  assert len(lines) == 2, p.stderr
  assert '--train_dir %s/t cannot be written (Read-only file system)' % ro \
      in lines[0]
  assert '%s/data' % ro in lines[1] and 'Read-only file system' in lines[1]
  assert p.stdout.count('== 1') == 2


@pytest.mark.slow
def test_full_disk_while_saving_and_at_the_next_start(shared_bin_dir,
                                                      tmp_path):
  full = str(tmp_path / 'full')
  os.makedirs(full)
  py = sys.executable
  train = ('{py} cifar10_train.py --train_dir {full}/t --data_dir {data} '
           '--batch_size 8 --max_steps 3 --use_bf16=False; echo "== $?"; ')
  p = _in_mount_namespace((
      'mount -t tmpfs -o size=3m tmpfs {full} && ' + train +
      'ls {full}/t; echo "== ls"; '
      'dd if=/dev/zero of={full}/filler bs=64k 2>/dev/null; ' + train).format(
          py=py, full=full, data=shared_bin_dir))
  lines = [l for l in p.stderr.split('\n') if ': error: ' in l]
  assert 'Traceback' not in p.stderr, p.stderr
  assert len(lines) == 2 and p.stdout.count('== 1') == 2, p.stderr
  assert 'cannot save checkpoint ckpt-3 in %s/t' % full in lines[0]
  assert 'No space left on device' in lines[0]
  assert '_temp' not in p.stdout.split('== ls')[0].split('== 1')[1]
  assert '%s/t' % full in lines[1] and 'space' in lines[1].lower()


# --- several workers ----------------------------------------------------------

@pytest.mark.slow
def test_sigterm_to_one_worker_stops_both_at_the_same_step(shared_bin_dir,
                                                           tmp_path):
  import re
  d = str(tmp_path / 'train')
  procs = start_workers(shared_bin_dir, d, 100000, free_ports(2))
  try:
    head = wait_for(procs[1], r'step 20, loss', timeout=240)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  outs[1] = ''.join(head) + outs[1]
  assert [p.returncode for p in procs] == [143, 143], outs
  saved = [int(re.search(r'saved checkpoint .* at step (\d+)', o).group(1))
           for o in outs]
  assert saved[0] == saved[1] >= 20, outs
  assert 'another worker was stopped by SIGTERM' in outs[0]
  assert tf.train.latest_checkpoint(d).endswith('ckpt-%d' % saved[0])
  procs = start_workers(shared_bin_dir, d, saved[0] + 5, free_ports(2))
  try:
    outs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], outs
  for o in outs:
    assert 'Resuming from %s at step %d' % (
        os.path.join(d, 'ckpt-%d' % saved[0]), saved[0]) in o
  assert tf.train.latest_checkpoint(d).endswith('ckpt-%d' % (saved[0] + 5))


@pytest.mark.slow
def test_closed_console_does_not_stop_training(shared_bin_dir, tmp_path):
  """`cifar10_train.py ... | head -n 3`: the reader goes, training goes on."""
  d = str(tmp_path / 't')
  proc = subprocess.Popen(
      [sys.executable, 'cifar10_train.py'] + train_args(
          shared_bin_dir, d, '--max_steps', '30', '--steps_per_loop', '5'),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  proc.stdout.readline()  # the start line: then the reader is gone
  proc.stdout.close()
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert not err.strip(), err  # no 'Broken pipe', no traceback
  assert tf.train.latest_checkpoint(d).endswith('ckpt-30')


def test_run_main_makes_one_line_of_the_toolkits_errors_only(capsys):
  def failing(error):
    def main(argv):
      raise error
    return main
  assert run_control.run_main(failing(errors.UsageError('--x is bad'))) == 1
  assert capsys.readouterr().err.endswith(': error: --x is bad\n')
  assert run_control.run_main(failing(
      errors.DataSetError('f.bin: cut'))) == 1
  assert capsys.readouterr().err.endswith(': error: f.bin: cut\n')
  # a bug is not dressed up as a tidy message: its traceback stays
  with pytest.raises(ValueError, match='a bug'):
    run_control.run_main(failing(ValueError('a bug')))
  with pytest.raises(KeyError):
    run_control.run_main(failing(KeyError('k')))
