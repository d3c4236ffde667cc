"""Tests of two_layer_fc.py, run_fc_model.py and restore_model.py."""

import re

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator as ea

import restore_model
import run_fc_model
from cifar10_toolkit import cli
from cifar10_toolkit import checkpoints
from cifar10_toolkit import run_control
import two_layer_fc
from conftest import write_py
from cifar10_toolkit import fc_runs


@pytest.fixture(scope='module')
def py_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('fc_data'))
  write_py(d, per_file=100)
  return d


def _args(data_dir, train_dir, *extra):
  return ['--data_dir', data_dir, '--train_dir', train_dir, '--batch_size',
          '50', '--max_steps', '30', '--seed', '1'] + list(extra)


def test_initialisation_and_regularization():
  model = two_layer_fc.TwoLayerFC(64, seed=2)
  w1 = model.params['layer1/weights'].numpy()
  w2 = model.params['layer2/weights'].numpy()
  assert w1.shape == (3072, 64) and w2.shape == (64, 10)
  assert np.abs(w1).max() <= 2 / np.sqrt(3072) + 1e-7
  assert abs(w1.std() - 0.88 / np.sqrt(3072)) < 0.05 / np.sqrt(3072)
  assert (model.params['layer1/biases'].numpy() == 0).all()
  reg = float(two_layer_fc.regularization(model, 0.1))
  assert reg == pytest.approx(0.1 * ((w1.astype(np.float64) ** 2).sum() +
                                     (w2.astype(np.float64) ** 2).sum()) / 2,
                              rel=1e-5)
  images = tf.random.normal([8, 3072])
  labels = tf.constant([0, 1, 2, 3, 4, 5, 6, 7])
  logits = two_layer_fc.inference(model, images)
  assert float(two_layer_fc.loss(model, logits, labels, 0.1)) == pytest.approx(
      float(two_layer_fc.loss(model, logits, labels, 0.0)) + reg, rel=1e-5)


def test_loss_falls():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 200)
  centres = rng.normal(size=(10, 3072)) * 3
  images = tf.constant(centres[labels] + rng.normal(size=(200, 3072)) * 10,
                       tf.float32)
  model = two_layer_fc.TwoLayerFC(32, seed=0)
  state = two_layer_fc.TrainState()
  step = tf.function(lambda: two_layer_fc.training(model, state, images,
                                                   labels, 0.001, 0.1))
  losses = [float(step()[0]) for _ in range(50)]
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.global_step) == 50
  acc = float(two_layer_fc.evaluation(two_layer_fc.inference(model, images),
                                      labels))
  assert acc > 0.9


def test_run_then_restore(py_dir, tmp_path, capsys):
  train_dir = str(tmp_path / 'logs')
  assert run_fc_model.main(_args(py_dir, train_dir)) == 0
  out = capsys.readouterr().out
  assert out.startswith('Parameters:\nbatch_size = 50\n')
  steps = re.findall(r'^Step (\d+), training accuracy [\d.]+$', out, re.M)
  assert steps == ['0']
  assert out.count('Saved checkpoint') == 1
  test_line = re.search(r'^Test accuracy ([\d.]+)$', out, re.M).group(1)
  assert re.search(r'^Total time: +[\d.]+s$', out, re.M)
  run_dir = re.search(r'^Logging to (.*)$', out, re.M).group(1)
  assert re.search(r'/\d{8}-\d{6}$', run_dir)

  assert restore_model.main(['--train_dir', train_dir, '--data_dir',
                             py_dir]) == 0
  out = capsys.readouterr().out
  assert 'Current step: 30\n' in out
  assert re.search(r'^Test accuracy ([\d.]+)$', out,
                   re.M).group(1) == test_line


def test_checkpoint_restores_identical_predictions(py_dir, tmp_path, capsys):
  train_dir = str(tmp_path / 'logs')
  run_fc_model.main(_args(py_dir, train_dir, '--max_steps', '1001'))
  path = fc_runs.newest_checkpoint(train_dir)
  assert path.endswith('ckpt-1001')
  # ckpt-1000 holds the weights 'Step 1000' reports on: said after its line
  lines = capsys.readouterr().out.splitlines()
  at = lines.index('Saved checkpoint %s' % path.replace('1001', '1000'))
  assert re.match(r'^Step 1000, training accuracy [\d.]+$', lines[at - 1])
  assert lines[at + 1] == 'Saved checkpoint %s' % path  # the last step's
  path = path.replace('1001', '1000')
  reader = tf.train.load_checkpoint(path)
  a = two_layer_fc.TwoLayerFC(120)
  b = two_layer_fc.TwoLayerFC(120, seed=9)
  for m in (a, b):
    checkpoints.restore(tf.train.Checkpoint(model=m,
                                          state=two_layer_fc.TrainState()),
                      path)
  x = tf.random.normal([16, 3072])
  np.testing.assert_array_equal(two_layer_fc.inference(a, x),
                                two_layer_fc.inference(b, x))
  w = reader.get_tensor('model/params/layer1.Sweights/.ATTRIBUTES/'
                        'VARIABLE_VALUE')
  np.testing.assert_array_equal(a.params['layer1/weights'].numpy(), w)


def test_event_files_hold_the_expected_tags(py_dir, tmp_path):
  train_dir = str(tmp_path / 'logs')
  run_fc_model.main(_args(py_dir, train_dir, '--max_steps', '201'))
  run_dir = fc_runs.newest_checkpoint(train_dir).rsplit('/', 1)[0]
  acc = ea.EventAccumulator(run_dir, size_guidance={ea.TENSORS: 0})
  acc.Reload()
  tags = set(acc.Tags()['tensors'])
  assert {'loss', 'train_accuracy', 'logits', 'test_accuracy'} <= tags
  assert len(acc.Graph().node) > 20  # the Graphs tab's graph
  assert [e.step for e in acc.Tensors('loss')] == [0, 100, 200]


@pytest.mark.parametrize('flag,value', [('--batch_size', '0'),
                                        ('--learning_rate', '-0.1'),
                                        ('--max_steps', '0'),
                                        ('--hidden1', 'x'),
                                        ('--learning_rate', '1e308')])
def test_bad_flags(flag, value, capsys):
  with pytest.raises(SystemExit) as e:
    cli.parse(run_fc_model.FLAGS, [flag, value])
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2 and len(err) == 1 and flag in err[0]


def test_restore_without_checkpoint(tmp_path, capsys):
  status = run_control.run_main(restore_model.main,
                              ['--train_dir', str(tmp_path)])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1 and 'no checkpoint under' in err[0]


def test_restore_with_other_hidden1(py_dir, tmp_path, capsys):
  train_dir = str(tmp_path / 'logs')
  run_fc_model.main(_args(py_dir, train_dir, '--hidden1', '16'))
  capsys.readouterr()
  status = run_control.run_main(restore_model.main, [
      '--train_dir', train_dir, '--data_dir', py_dir])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1
  assert 'has 16 hidden units, not --hidden1 120' in err[0]
