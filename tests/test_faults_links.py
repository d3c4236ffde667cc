"""Nothing outside the run's folders is written or deleted through a link
planted where the toolkit keeps its own files; other users' folders are
refused; --fresh leaves the data where it is; TF_CONFIG's addresses are
checked at once; FIFOs never make a script wait."""

import json
import os

import pytest
import tensorflow as tf

import cifar10_eval
import cifar10_multi_gpu_train
import cifar10_train
from cifar10_toolkit import cluster
from cifar10_toolkit import errors
from cifar10_toolkit import run_control
from cifar10_toolkit import run_folder
from cifar10_toolkit import summaries
from conftest import train_args, write_bin


@pytest.mark.parametrize('planted', ['.lock', 'hparams.json',
                                     '.hparams-x'])
def test_a_planted_link_never_leads_a_write_elsewhere(shared_bin_dir,
                                                      tmp_path, capsys,
                                                      planted):
  precious = tmp_path / 'precious'
  precious.write_text('mine\n')
  d = tmp_path / 't'
  d.mkdir()
  os.symlink(str(precious), str(d / planted))
  status = run_control.run_main(cifar10_train.main, train_args(
      shared_bin_dir, str(d)) + ['--max_steps', '2'])
  assert precious.read_text() == 'mine\n'  # untouched, whatever happened
  err = capsys.readouterr().err.strip().splitlines()
  if planted == '.lock':  # refused, in one line naming it
    assert status == 1 and len(err) == 1 and err[0].endswith(
        '%s is a symbolic link (to %s), not the lock this toolkit keeps; '
        'remove it' % (d / '.lock', precious))
  else:  # hparams.json is replaced (the link, not its target)
    assert status == 0
    assert not os.path.islink(str(d / 'hparams.json'))
    assert json.load(open(str(d / 'hparams.json')))['hparams']['seed'] == '3'


@pytest.mark.skipif(os.geteuid() != 0,
                    reason='needs root to make a folder of another user')
def test_a_folder_of_another_user_is_refused(tmp_path):
  d = tmp_path / 'theirs'
  d.mkdir()
  os.chown(str(d), 12345, 12345)
  with pytest.raises(errors.UsageError) as e:
    run_folder.prepare_dir(str(d), '--train_dir')
  assert str(e.value) == ('--train_dir %s belongs to another user (uid '
                          '12345); use a folder of your own' % d)


def test_a_workers_folder_as_a_link_is_removed_not_followed(tmp_path):
  victim = tmp_path / 'victim'
  victim.mkdir()
  (victim / 'ckpt-1.index').write_text('theirs')
  link = tmp_path / 'train' / '.worker-worker-1'
  link.parent.mkdir()
  os.symlink(str(victim), str(link))
  run_folder.remove_own_folder(str(link))
  assert not os.path.lexists(str(link))
  assert (victim / 'ckpt-1.index').read_text() == 'theirs'


def test_fresh_leaves_the_data_set_where_it_is(tmp_path, capsys):
  d = str(tmp_path / 'x')
  write_bin(d, per_file=100)
  args = ['--train_dir', d, '--data_dir', d, '--batch_size', '32',
          '--seed', '3', '--max_steps', '1', '--use_bf16=false']
  assert cifar10_train.main(args) == 0
  assert cifar10_train.main(args + ['--fresh', '--max_steps', '2']) == 0
  assert os.path.isdir(os.path.join(d, 'cifar-10-batches-bin'))
  assert tf.train.latest_checkpoint(d).endswith('ckpt-2')
  (previous,) = [e for e in os.listdir(d) if e.startswith('previous-')]
  assert 'cifar-10-batches-bin' not in os.listdir(os.path.join(d, previous))


@pytest.mark.parametrize('address', ['127.0.0.1:99999', '127.0.0.1',
                                     '127.0.0.1:abc', ':123'])
def test_a_bad_tf_config_address_is_one_line(monkeypatch, address):
  monkeypatch.setenv('TF_CONFIG', json.dumps({
      'cluster': {'worker': ['127.0.0.1:2222', address]},
      'task': {'type': 'worker', 'index': 0}}))
  with pytest.raises(errors.UsageError) as e:
    cluster.read_tf_config()
  assert str(e.value) == (
      'TF_CONFIG: worker 1\'s address %r is not "host:port" with a port from '
      '1 to 65535' % address)


def test_fifos_make_no_script_wait(trained, shared_bin_dir, tmp_path, capsys):
  d = tmp_path / 'fifo'
  d.mkdir()
  os.mkfifo(str(d / 'hparams.json'))
  assert summaries.load_run_hparams(str(d)) == (None, None)  # at once
  os.mkfifo(str(d / 'checkpoint'))
  status = run_control.run_main(cifar10_eval.main, [
      '--checkpoint_dir', str(d), '--eval_dir', str(tmp_path / 'e'),
      '--data_dir', shared_bin_dir, '--run_once'])
  out = capsys.readouterr()
  assert status == 1 and 'no checkpoint in' in out.err
  assert 'index file %s is not a regular file' % (d / 'checkpoint') in out.out
  # a FIFO as a pickle batch of the fully connected model's data
  import data_helpers
  from conftest import write_py
  write_py(str(tmp_path / 'py'), per_file=20)
  batch = tmp_path / 'py' / 'cifar-10-batches-py' / 'data_batch_2'
  batch.unlink()
  os.mkfifo(str(batch))
  with pytest.raises(errors.DataSetError) as e:
    data_helpers.load_data(str(tmp_path / 'py'))
  assert str(e.value) == '%s: not a regular file' % batch


def test_a_relative_train_dir_resumes_without_a_false_note(
    shared_bin_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  assert cifar10_train.main(train_args(shared_bin_dir, 'rel') + [
      '--max_steps', '2']) == 0
  capsys.readouterr()
  assert cifar10_train.main(train_args(shared_bin_dir, 'rel') + [
      '--max_steps', '3']) == 0
  out = capsys.readouterr().out
  assert 'Note:' not in out and 'Resuming from rel/ckpt-2 at step 2' in out


def test_a_resume_that_changes_the_global_batch_is_refused(
    shared_bin_dir, tmp_path, capsys):
  d = str(tmp_path / 't')
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '4']) == 0
  before = sorted(os.listdir(d)), open(os.path.join(d, 'hparams.json')).read()
  capsys.readouterr()
  for script, extra, this in (
      (cifar10_train, ['--batch_size', '64'],
       '64 (--batch_size 64 x 1 replica(s))'),
      (cifar10_multi_gpu_train, ['--logical_devices', '2'],
       '64 (--batch_size 32 x 2 replica(s))')):
    status = run_control.run_main(script.main, train_args(
        shared_bin_dir, d) + ['--max_steps', '6'] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert err[0].endswith(
        '%s was trained with 32 examples per step; this run would take %s, '
        'which changes its input order and schedule: resume with the same '
        '--batch_size and replicas, or pass --allow_new_batch' % (
            os.path.join(d, 'ckpt-4'), this)), err
  # nothing changed: no checkpoint, no HParams rewritten
  assert (sorted(os.listdir(d)), open(os.path.join(d, 'hparams.json')).read()
          ) == before
  # asked for, it goes on, with a note, and keeps the new batch from there
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '6', '--batch_size', '64', '--allow_new_batch']) == 0
  assert 'Note: resuming a run of 32 examples per step with 64' in \
      capsys.readouterr().out
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '7', '--batch_size', '64']) == 0
