"""The model seam (--model): a model module of the user's, one new file,
through every script; a module that lacks part of the interface, or gives
the wrong logits, is one line; a checkpoint of one model given to another
is one line naming both."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cifar10_classify
import cifar10_input
import cifar10_eval
import cifar10_export
import cifar10_train
import convnet
import models
from cifar10_toolkit import cli
from cifar10_toolkit import config
from cifar10_toolkit import errors
from cifar10_toolkit import hardware
from cifar10_toolkit import interface
from cifar10_toolkit import run_control
from cifar10_toolkit import run_record
from conftest import ROOT
from conftest import train_args
from conftest import write_bin
from data_sets import CIFAR10

# A model of the user's: one file beside nothing, no edit anywhere else. It
# reuses the convnet's state, loss, training step and moving averages.
MY_MODEL = '''
"""One hidden layer on the pixels."""
import collections

import tensorflow as tf

import convnet
from convnet import (SCHEDULE, TrainState, evaluation, loss,
                     loss_averages, use_moving_averages)


class Model(tf.Module):

  def __init__(self, seed=0, num_classes=10, image_size=24):
    super().__init__(name='my_model')
    self.layers = collections.OrderedDict([
        ('hidden', ([image_size * image_size * 3, 32], 0.01, 0.004, 0.1)),
        ('logits', ([32, %s], 1 / 32.0, 0.0, 0.0))])
    self.params = collections.OrderedDict()
    for i, (name, (shape, stddev, _, bias)) in enumerate(
        self.layers.items()):
      self.params[name + '/weights'] = convnet.variable(
          tf.random.stateless_truncated_normal(shape, [seed, i],
                                               stddev=stddev),
          name + '/weights')
      self.params[name + '/biases'] = convnet.variable(
          tf.fill([shape[-1]], bias), name + '/biases')


def inference(model, images, compute_dtype=tf.float32, slices=1):
  p = {k: tf.cast(v, compute_dtype) for k, v in model.params.items()}
  x = tf.reshape(tf.cast(images, compute_dtype), [tf.shape(images)[0], -1])
  hidden = tf.nn.relu(tf.matmul(x, p['hidden/weights']) + p['hidden/biases'])
  logits = tf.matmul(hidden, p['logits/weights']) + p['logits/biases']
  return tf.cast(logits, tf.float32), {'hidden': hidden}
%s
'''
TRAINING = '''

def training(model, state, images, labels, global_batch_size,
             with_summaries=False, slices=1):
  return convnet.training(model, state, images, labels, global_batch_size,
                          with_summaries, slices, forward=inference)
'''


def _write_model(folder, name='my_model', classes='num_classes',
                 training=TRAINING):
  path = os.path.join(folder, name + '.py')
  with open(path, 'w') as f:
    f.write(MY_MODEL % (classes, training))
  return path


def _one_line(main, argv, capsys):
  """(exit status, the one stderr line) of a script's main run as a user's."""
  capsys.readouterr()
  status = run_control.run_main(main, argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  return status, err[0]


def test_the_tutorials_convnet_is_the_default_and_has_the_interface():
  assert models.NAMES[0] == 'convnet'
  assert models.get('convnet') is convnet
  assert interface.missing(convnet) == [] and interface.splits(convnet)
  assert cifar10_train.FLAGS['model'].default == 'convnet'


@pytest.mark.parametrize('name,before,after', [
    ('resnet20', None, '1'), ('resnet20', '0', '0'), ('convnet', None, None)])
def test_onednn_for_the_models_that_ask_unless_the_user_set_it(
    monkeypatch, name, before, after):
  monkeypatch.setattr(models.platform, 'machine', lambda: 'x86_64')
  monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
  if before is not None:
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', before)
  models.before_tensorflow(name)
  assert os.environ.get('TF_ENABLE_ONEDNN_OPTS') == after


def test_a_module_that_lacks_part_of_the_interface_is_one_line(tmp_path):
  path = _write_model(str(tmp_path), 'no_training', training='')
  with pytest.raises(errors.UsageError, match=(
      r'^model module no_training \(.*no_training.py\) lacks training \(the '
      r'model interface: docs/extending.md\)$')):
    models.get(path)
  with open(os.path.join(str(tmp_path), 'empty.py'), 'w') as f:
    f.write('SCHEDULE = 1\n')
  with pytest.raises(errors.UsageError, match=(
      r'lacks Model, TrainState, SCHEDULE \(a namedtuple with a train_size '
      r'field\), inference, loss, training, evaluation, use_moving_averages,'
      r' loss_averages \(')):
    models.get(os.path.join(str(tmp_path), 'empty.py'))
  with pytest.raises(errors.UsageError, match="^'nosuch': unknown; choose "
                     'one of convnet, resnet20, or a Python file or module'):
    models.get('nosuch')


# inference with a Python branch on a tensor, then the same under
# @tf.autograph.to_graph, which the one line names as the fix
BRANCHING = """
%s
def inference(model, images, compute_dtype=tf.float32, slices=1):
  if tf.reduce_mean(images) > 0:
    images = -images
  return plain_inference(model, images, compute_dtype, slices)
"""


def test_a_python_branch_on_a_tensor_is_one_line_naming_the_fix(tmp_path):
  """The scripts trace models without AutoGraph: the model's check says so
  before anything trains."""
  path = _write_model(str(tmp_path), 'branching')
  with open(path, 'a') as f:
    f.write('\nplain_inference = inference\n' + BRANCHING % '')
  mine = models.get(path)
  with pytest.raises(errors.UsageError, match=(
      r'^model module branching \(.*branching.py\): inference branches or '
      r'loops on a tensor in Python, .* or decorate that function with '
      r'@tf.autograph.to_graph \(docs/extending.md\)$')):
    config.new_model(mine, cifar10_input, CIFAR10)
  with open(path, 'a') as f:
    f.write(BRANCHING % '\n@tf.autograph.to_graph')
  config.new_model(models.get(path), cifar10_input, CIFAR10)


def test_xla_with_several_replicas_needs_trainings_two_halves(tmp_path):
  mine = models.get(_write_model(str(tmp_path)))
  assert not interface.splits(mine)
  cpu = hardware.Device('CPU', None, 2, False)
  gpu = hardware.Device('GPU', (8, 0), 2, True)  # where auto is XLA
  for argv, device, replicas, model_lib, want in (
      ([], gpu, 2, mine, False), ([], gpu, 2, convnet, True),
      ([], gpu, 1, mine, True), (['--jit_compile'], cpu, 1, mine, True),
      (['--jit_compile'], cpu, 2, convnet, True)):
    cli.parse(cifar10_train.FLAGS, argv)
    assert config.resolve(cifar10_train.FLAGS, device, replicas, CIFAR10,
                          model_lib, cifar10_input).jit_compile == want
  cli.parse(cifar10_train.FLAGS, ['--jit_compile'])
  with pytest.raises(errors.UsageError, match=(
      '^--jit_compile with 2 replicas needs the model module my_model to '
      'declare gradients and update')):
    config.resolve(cifar10_train.FLAGS, cpu, 2, CIFAR10, mine, cifar10_input)
  cli.parse(cifar10_train.FLAGS, [])



def test_a_schedule_flag_the_model_lacks_is_refused():
  import resnet20
  cpu = hardware.Device('CPU', None, 2, False)
  cli.parse(cifar10_train.FLAGS, ['--decay_factor', '0.2',
                                  '--learning_rate', '0.05'])
  got = config.resolve(cifar10_train.FLAGS, cpu, 1, CIFAR10, resnet20,
                       cifar10_input).schedule
  assert (got.decay_factor, got.learning_rate) == (0.2, 0.05)
  assert got.first_decay_epoch == resnet20.SCHEDULE.first_decay_epoch
  cli.parse(cifar10_train.FLAGS, ['--epochs_per_decay', '10'])
  with pytest.raises(errors.UsageError, match=(
      r'^--epochs_per_decay: the model resnet20 has no epochs_per_decay in '
      r'its schedule \(it has learning_rate, first_decay_epoch, ')):
    config.resolve(cifar10_train.FLAGS, cpu, 1, CIFAR10, resnet20,
                   cifar10_input)
  cli.parse(cifar10_train.FLAGS, [])

@pytest.mark.slow
@pytest.mark.parametrize('argv, status, message', [
    (['--model', 'nosuch'], 2, 'flag --model=nosuch: no such model module; '
     'choose one of convnet, resnet20, or a Python file or module of the '
     'model interface (docs/extending.md)'),
    (['--model', 'MODEL:no_training'], 1, 'lacks training (the model '
     'interface: docs/extending.md)'),
    (['--model', 'MODEL:seven'], 1, 'seven.py): inference gives logits of '
     'shape [2, 7] for a batch of shape [2, 24, 24, 3]; the data set has 10 '
     'classes, so [2, 10] was expected'),
    (['--model', 'MODEL:broken'], 1, "broken.py: NameError: name 'oops' is "
     'not defined')])
def test_a_bad_model_is_one_line_and_leaves_no_run_folder(
    argv, status, message, tmp_path, shared_bin_dir):
  folder = str(tmp_path / 'models')
  os.mkdir(folder)
  _write_model(folder, 'no_training', training='')
  _write_model(folder, 'seven', classes='7')
  _write_model(folder, 'broken', training=TRAINING + 'oops\n')
  argv = [a.replace('MODEL:', folder + '/') + ('.py' if 'MODEL:' in a else '')
          for a in argv]
  proc = subprocess.run(
      [sys.executable, 'cifar10_train.py'] + train_args(
          shared_bin_dir, str(tmp_path / 't'), '--max_steps', '1') + argv,
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  err = proc.stderr.strip().splitlines()
  assert proc.returncode == status and len(err) == 1, (proc.returncode, err)
  assert message in err[0], err
  assert not os.path.exists(str(tmp_path / 't'))


@pytest.mark.slow
def test_a_model_of_the_users_trains_evaluates_exports_and_classifies(
    tmp_path, capsys):
  """One new file and --model: the scripts, each as its user runs it."""
  data, train = str(tmp_path / 'data'), str(tmp_path / 'train')
  write_bin(data)
  path = _write_model(str(tmp_path))
  proc = subprocess.run(
      [sys.executable, 'cifar10_train.py', '--model', path] + train_args(
          data, train, '--max_steps', '30', '--summary_steps', '10'),
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert 'Training from step 0 to 30' in proc.stdout
  ckpt = tf.train.latest_checkpoint(train)
  assert run_record.read(ckpt).model == 'my_model'
  shapes = tf.train.load_checkpoint(ckpt).get_variable_to_shape_map()
  assert shapes['model/params/hidden.Sweights/.ATTRIBUTES/VARIABLE_VALUE'] \
      == [24 * 24 * 3, 32]

  capsys.readouterr()
  assert cifar10_eval.main(['--model', path, '--data_dir', data,
                            '--checkpoint_dir', train, '--eval_dir',
                            str(tmp_path / 'eval'), '--run_once']) == 0
  out = capsys.readouterr().out
  assert 'precision @ 1 = ' in out and 'step 30' in out, out

  # A checkpoint of one model given to another: one line naming both.
  for main, argv in (
      (cifar10_eval.main, ['--eval_dir', str(tmp_path / 'e2'), '--run_once',
                           '--data_dir', data]),
      (cifar10_export.main, ['--export_dir', str(tmp_path / 'x')]),
      (cifar10_train.main, train_args(data, train, '--max_steps', '31'))):
    status, line = _one_line(main, argv + ['--checkpoint_dir', train]
                             if main is not cifar10_train.main else argv,
                             capsys)
    assert status == 1 and ('holds the model --model my_model, not --model '
                            'convnet: pass --model my_model') in line, line
  assert not os.path.exists(str(tmp_path / 'x'))
  assert tf.train.latest_checkpoint(train) == ckpt  # nothing written

  export = str(tmp_path / 'export')
  assert cifar10_export.main(['--model', path, '--checkpoint_dir', train,
                              '--export_dir', export]) == 0
  served = tf.saved_model.load(export)
  pictures = np.random.RandomState(0).randint(0, 256, (3, 32, 32, 3))
  probs = served.signatures['serving_default'](
      images=tf.constant(pictures, tf.uint8))['probabilities'].numpy()
  assert probs.shape == (3, 10)
  np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)

  image = str(tmp_path / 'cat.png')
  tf.io.write_file(image, tf.io.encode_png(tf.constant(pictures[0],
                                                       tf.uint8)))
  lines = []
  for where in (['--model', path, '--checkpoint_dir', train],
                ['--export_dir', export]):
    capsys.readouterr()
    assert cifar10_classify.main([image] + where) == 0
    lines.append(capsys.readouterr().out)
  assert lines[0] == lines[1] and lines[0].startswith(image + ': ')
