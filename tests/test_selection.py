"""--checkpoint in every script that restores one, and the best checkpoint
that the evaluators keep (cifar10_toolkit/selection.py)."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cifar10_classify
import cifar10_eval
import cifar10_export
import cifar10_train
import restore_model
import run_fc_model
from cifar10_toolkit import fc_runs
from cifar10_toolkit import run_control
from cifar10_toolkit import selection
from conftest import ROOT, checkpoint_params, train_args, write_py

# a costly module fixture: its tests run in one process (--dist loadgroup)
pytestmark = pytest.mark.xdist_group('four_steps')


@pytest.fixture(scope='module')
def four_steps(shared_bin_dir, tmp_path_factory):
  """A 4-step convnet run with a checkpoint at each step (1 to 4)."""
  d = str(tmp_path_factory.mktemp('four_steps'))
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '4', '--steps_per_loop', '1',
      '--save_checkpoint_secs', '0.000001']) == 0
  return d


@pytest.fixture
def run(four_steps, tmp_path):
  """A copy of four_steps, that the evaluator may write best/ into."""
  d = str(tmp_path / 'train')
  shutil.copytree(four_steps, d)
  return d


def _eval(run, data, e, *extra):
  return cifar10_eval.main(['--checkpoint_dir', run, '--eval_dir', e,
                            '--data_dir', data, '--num_examples', '200']
                           + list(extra))


def test_choose_takes_a_step_a_path_or_best_and_names_what_is_there(run):
  assert selection.choose(run, None) is None
  path = os.path.join(run, 'ckpt-2')
  assert selection.choose(run, '2') == path
  for given in (path, path + '.index', path + '.data-00000-of-00001'):
    assert selection.choose(run, given) == path
  for choice, said in (
      ('99', '--checkpoint 99: %s holds no checkpoint of step 99 (its steps: '
             '1, 2, 3, 4)' % run),
      (run + '/ckpt-77', '--checkpoint %s/ckpt-77: no such checkpoint '
                         '(%s/ckpt-77.index is missing)' % (run, run)),
      (run, '--checkpoint %s is a folder' % run),
      ('best', '--checkpoint best: %s holds no best checkpoint' % run)):
    with pytest.raises(run_control.errors.UsageError) as e:
      selection.choose(run, choice)
    assert str(e.value).startswith(said), str(e.value)


def test_the_evaluator_keeps_the_best_and_every_script_takes_it(
    run, shared_bin_dir, tmp_path, capsys):
  e = str(tmp_path / 'eval')
  precisions = {}
  for step in (1, 3, 2):
    assert _eval(run, shared_bin_dir, e, '--checkpoint', str(step)) == 0
    out = capsys.readouterr().out
    precisions[step] = float(re.search(r'precision @ 1 = ([\d.]+)\n',
                                       out).group(1))
    assert 'ckpt-%d (step %d), 200 examples' % (step, step) in out
  record = selection.best_record(run)
  best = max(precisions, key=lambda s: (precisions[s], -[1, 3, 2].index(s)))
  assert (record['step'], record['examples']) == (best, 200)
  assert abs(record['precision'] - precisions[best]) < 5e-4
  assert record['copied_from'] == os.path.join(run, 'ckpt-%d' % best)
  # the copy is the checkpoint, bit for bit; TensorFlow finds it by itself
  best_path = os.path.join(run, 'best', 'ckpt-%d' % best)
  assert tf.train.latest_checkpoint(os.path.join(run, 'best')) == best_path
  for a, b in zip(checkpoint_params(best_path), checkpoint_params(
      record['copied_from'])):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  assert sorted(os.listdir(os.path.join(run, 'best'))) == sorted(
      ['best.json', 'checkpoint'] + [n for n in os.listdir(run) if
                                     n.startswith('ckpt-%d.' % best)])
  # rotation never reaches it: the trainer goes on for 6 more checkpoints
  assert cifar10_train.main(train_args(shared_bin_dir, run) + [
      '--max_steps', '10', '--steps_per_loop', '1',
      '--save_checkpoint_secs', '0.000001']) == 0
  assert not os.path.exists(os.path.join(run, 'ckpt-%d.index' % best))
  assert selection.best_record(run) == record
  # --checkpoint best: the evaluator (held: not written again), export and
  # classify all take it
  capsys.readouterr()
  assert _eval(run, shared_bin_dir, e, '--checkpoint', 'best') == 0
  out = capsys.readouterr().out
  assert ('precision @ 1 = %.3f (held in %s)' % (precisions[best], e) in out
          and 'step %d (%s) is already evaluated there' % (best, best_path)
          in out), out
  export = str(tmp_path / 'model')
  assert cifar10_export.main(['--checkpoint_dir', run, '--export_dir', export,
                              '--checkpoint', 'best']) == 0
  assert 'Exported %s (step %d,' % (best_path, best) in \
      capsys.readouterr().out
  png = str(tmp_path / 'a.png')
  tf.io.write_file(png, tf.io.encode_png(np.full((32, 32, 3), 90, np.uint8)))
  outs = []
  for where in (['--export_dir', export], ['--checkpoint_dir', run,
                                           '--checkpoint', 'best']):
    assert cifar10_classify.main([png] + where) == 0
    outs.append(capsys.readouterr().out)
  assert outs[0] == outs[1], outs


def test_a_checkpoint_named_by_path_is_of_its_own_folder(
    run, shared_bin_dir, tmp_path):
  """best/ goes beside the checkpoint, never into --checkpoint_dir's run
  (another run's folder), and --checkpoint_dir need not exist."""
  copies = tmp_path / 'milestones'
  copies.mkdir()
  for name in os.listdir(run):
    if name.startswith('ckpt-3.'):
      shutil.copy(os.path.join(run, name), copies)
  path = str(copies / 'ckpt-3')
  held = sorted(os.listdir(run))
  assert _eval(run, shared_bin_dir, str(tmp_path / 'e1'), '--checkpoint',
               path) == 0
  assert sorted(os.listdir(run)) == held
  assert selection.best_record(str(copies))['copied_from'] == path
  assert _eval(str(tmp_path / 'none'), shared_bin_dir, str(tmp_path / 'e2'),
               '--checkpoint', path + '.index') == 0
  assert not os.path.exists(tmp_path / 'none')


def test_a_better_checkpoint_replaces_the_best_and_a_cut_copy_never_counts(
    run, monkeypatch):
  assert selection.keep_if_best(run, run + '/ckpt-1', 1, 0.25, 200)
  # fewer examples, or not better on as many: kept as it is
  assert selection.keep_if_best(run, run + '/ckpt-2', 2, 0.9, 100) is None
  assert selection.keep_if_best(run, run + '/ckpt-2', 2, 0.25, 200) is None
  # a copy cut short (a crash, a full disk) after the first file
  real = selection._copy_whole

  def cut(source, dest):
    real(source, dest)
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(selection, '_copy_whole', cut)
  with pytest.raises(OSError):
    selection.keep_if_best(run, run + '/ckpt-3', 3, 0.5, 200)
  assert selection.best_record(run)['step'] == 1
  assert selection.choose(run, 'best') == os.path.join(run, 'best', 'ckpt-1')
  monkeypatch.setattr(selection, '_copy_whole', real)
  # the next copy clears what the cut one left; a record half written (or
  # naming files that are gone) is no best at all
  now, before = selection.keep_if_best(run, run + '/ckpt-3', 3, 0.5, 200)
  assert (now['step'], before['step']) == (3, 1)
  names = os.listdir(os.path.join(run, 'best'))
  assert not [n for n in names if n.startswith(('ckpt-1', '.copying'))]
  record = os.path.join(run, 'best', 'best.json')
  with open(record, 'r+') as f:
    f.truncate(20)
  assert selection.best_record(run) is None


def test_a_chosen_checkpoint_that_cannot_be_used_is_one_line(
    run, shared_bin_dir, tmp_path, capsys):
  with open(os.path.join(run, 'ckpt-2.data-00000-of-00001'), 'r+b') as f:
    f.truncate(100)
  fc = str(tmp_path / 'fc')
  data = str(tmp_path / 'py')
  write_py(data, per_file=50)
  assert run_fc_model.main(['--data_dir', data, '--train_dir', fc,
                            '--max_steps', '2', '--batch_size', '10']) == 0
  fc_path = fc_runs.newest_checkpoint(fc)
  capsys.readouterr()
  for script, args, said in (
      (cifar10_eval, ['--checkpoint', '2'], '--checkpoint %s/ckpt-2 cannot be '
       'read' % run),
      (cifar10_export, ['--checkpoint', '2', '--export_dir',
                        str(tmp_path / 'x')], '--checkpoint %s/ckpt-2 cannot '
       'be read' % run),
      (cifar10_eval, ['--checkpoint', fc_path], '--checkpoint %s is a fully '
       'connected checkpoint, not a convnet one' % fc_path),
      (cifar10_classify, ['--checkpoint', '7', 'x.png'], '--checkpoint 7: '
       '%s holds no checkpoint of step 7' % run)):
    extra = (['--eval_dir', str(tmp_path / 'e'), '--data_dir', shared_bin_dir]
             if script is cifar10_eval else [])
    status = run_control.run_main(script.main, args + extra + [
        '--checkpoint_dir', run])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and said in err[0], err
  assert not os.path.exists(str(tmp_path / 'x'))
  assert not os.path.exists(os.path.join(run, 'best'))
  # as a user meets it: a subprocess, before TensorFlow has loaded
  proc = subprocess.run(
      [sys.executable, 'cifar10_export.py', '--checkpoint', ' 3'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
  assert "--checkpoint" in proc.stderr and "'best'" in proc.stderr


def test_restore_model_takes_a_step_or_the_best(tmp_path, capsys):
  data, logs = str(tmp_path / 'py'), str(tmp_path / 'logs')
  write_py(data, per_file=50)
  assert run_fc_model.main(['--data_dir', data, '--train_dir', logs,
                            '--max_steps', '1001', '--batch_size', '10',
                            '--seed', '1']) == 0
  final = float(re.search(r'Test accuracy ([\d.]+)',
                          capsys.readouterr().out).group(1))
  run_dir = os.path.join(logs, os.listdir(logs)[0])
  with open(os.path.join(run_dir, 'best', 'best.json')) as f:
    assert json.load(f)['step'] == 1001  # run_fc_model.py keeps its last
  args = ['--train_dir', logs, '--data_dir', data]
  assert restore_model.main(args + ['--checkpoint', '1000']) == 0
  out = capsys.readouterr().out
  assert 'Restored %s/ckpt-1000\nCurrent step: 1000\n' % run_dir in out
  at_1000 = float(re.search(r'Test accuracy ([\d.]+)', out).group(1))
  # tested, it is kept if better than the last (which run_fc_model kept)
  said = [l for l in out.splitlines() if 'best' in l]
  assert said == ([] if at_1000 <= final else [
      '  kept as the best checkpoint: %s/best/ckpt-1000 (--checkpoint best); '
      'before: step 1001, %.3f' % (run_dir, final)]), said
  assert restore_model.main(args + ['--checkpoint', 'best']) == 0
  out = capsys.readouterr().out
  best = 1000 if at_1000 > final else 1001
  assert 'Restored %s/best/ckpt-%d\nCurrent step: %d\n' % (
      run_dir, best, best) in out, out
  assert 'kept as the best checkpoint' not in out  # (it is the best)
  status = run_control.run_main(restore_model.main, args + ['--checkpoint',
                                                            '5'])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1 and (
      '--checkpoint 5: no run folder under %s holds ckpt-5' % logs) in err[0]
  # a damaged one, chosen: one line naming it
  with open(os.path.join(run_dir, 'ckpt-1000.index'), 'r+b') as f:
    f.truncate(10)
  status = run_control.run_main(restore_model.main, args + ['--checkpoint',
                                                            '1000'])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1 and (
      '--checkpoint %s/ckpt-1000 cannot be read' % run_dir) in err[0], err
