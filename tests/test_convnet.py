"""Tests of convnet.py, cifar10_train.py and cifar10_eval.py on small data."""

import glob
import os
import re
import signal
import shutil
import time

import numpy as np
import pytest

from data_sets import CIFAR10
import tensorflow as tf

import cifar10_eval
from cifar10_toolkit import cli
from cifar10_toolkit import config
import cifar10_train
import cifar10_input
import convnet
from cifar10_toolkit import grad_ops
from cifar10_toolkit import hardware
from cifar10_toolkit import lrn
from cifar10_toolkit import run_control
from cifar10_toolkit import summaries
from cifar10_toolkit import evaluation
from conftest import (checkpoint_params, event_tags, noisy_batch,
                      tutorial_convnet_only,
                      start_script, train_args, wait_for)


# --- the model --------------------------------------------------------------

def test_parameter_count():
  model = convnet.ConvNet()
  assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == \
      1068298
  assert len(model.trainable_variables) == 10


def test_initialisation_follows_reference():
  model = convnet.ConvNet(seed=4)
  for layer, (shape, stddev, _, bias) in convnet.LAYERS.items():
    w = model.params[layer + '/weights'].numpy()
    b = model.params[layer + '/biases'].numpy()
    assert list(w.shape) == shape
    assert np.abs(w).max() <= 2 * stddev + 1e-7          # truncated at 2 sd
    assert abs(w.std() - 0.88 * stddev) < 0.1 * stddev   # sd of the truncation
    assert (b == bias).all()


def test_loss_terms():
  model = convnet.ConvNet()
  images, labels = noisy_batch()
  logits, acts = convnet.inference(model, images)
  assert logits.shape == (32, 10)
  assert list(acts) == list(convnet.LAYERS)
  losses = convnet.loss(model, logits, labels)
  assert set(losses) == {'cross_entropy', 'local3/weight_loss',
                         'local4/weight_loss', 'total_loss'}
  w3 = model.params['local3/weights'].numpy().astype(np.float64)
  np.testing.assert_allclose(losses['local3/weight_loss'],
                             0.004 * (w3 ** 2).sum() / 2, rtol=1e-5)
  np.testing.assert_allclose(
      losses['total_loss'],
      sum(v for k, v in losses.items() if k != 'total_loss'), rtol=1e-6)
  assert int(convnet.evaluation(logits, labels)) == int(
      (np.argmax(logits, 1) == labels.numpy()).sum())


def test_learning_rate_schedule():
  decay_steps = int(50000 / 128 * 350)
  assert decay_steps == 136718
  lr = lambda s: float(convnet.learning_rate(s, 128))
  assert lr(0) == pytest.approx(0.1)
  assert lr(decay_steps - 1) == pytest.approx(0.1)
  assert lr(decay_steps) == pytest.approx(0.01)
  assert lr(2 * decay_steps) == pytest.approx(0.001)
  # epochs are counted at 50,000 images whatever the global batch
  assert float(convnet.learning_rate(int(50000 / 256 * 350), 256)) == \
      pytest.approx(0.01)


@pytest.mark.slow
def test_loss_falls_and_moving_averages_follow_the_formula():
  model = convnet.ConvNet(seed=1)
  state = convnet.TrainState(model)
  images, labels = noisy_batch(64)
  step = tf.function(
      lambda: convnet.training(model, state, images, labels, 64))
  losses, ce = [], []
  for _ in range(40):
    before = {k: v.numpy() for k, v in state.averages.items()}
    out = step()
    losses.append(float(out['total_loss']))
    ce.append(float(out['cross_entropy']))
    s = int(state.global_step)
    decay = min(0.9999, (1.0 + s) / (10.0 + s))
    for k, v in model.params.items():
      np.testing.assert_allclose(
          state.averages[k].numpy(),
          decay * before[k] + (1 - decay) * v.numpy(), rtol=1e-5, atol=1e-7)
  assert int(state.global_step) == 40
  # SGD 0.1 on one batch is chaotic after the first steps (a spike above 8
  # near step 8; round-off alone, which differs between CPUs and between
  # oneDNN's kernels with and without AMX, moves the loss at any one later
  # step by +-1: step 40 was 1.65 in float32 on a Xeon with AMX, 1.0-1.5
  # elsewhere). The median of the last 10 steps is what learns: 1.3-1.4 in
  # float32, where a network that does not learn stays near ln(10) = 2.3.
  assert np.median(ce[-10:]) < 0.7 * ce[0]
  # the total adds weight decay (about 2.4 here, falling slowly)
  assert np.median(losses[-10:]) < losses[0] - 0.5
  # the loss averages are zero-debiased averages with decay 0.9
  avg = convnet.loss_averages(state)['total_loss']
  assert min(losses[-15:]) < float(avg) < max(losses[-15:])


@pytest.mark.slow
@tutorial_convnet_only
def test_mixed_precision_keeps_float32_variables():
  # float16 is emulated on CPUs, hence the tiny batch
  model = convnet.ConvNet(seed=1)
  state = convnet.TrainState(model, compute_dtype=tf.float16)
  images, labels = noisy_batch(8)
  logits16, _ = convnet.inference(model, images, tf.float16)
  logits32, _ = convnet.inference(model, images)
  np.testing.assert_allclose(logits16, logits32, atol=5e-2)
  before = model.params['local3/weights'].numpy()
  step = tf.function(
      lambda: convnet.training(model, state, images, labels, 8))
  losses = [float(step()['total_loss']) for _ in range(6)]
  assert all(v.dtype == tf.float32 for v in model.trainable_variables)
  assert np.isfinite(losses).all() and losses[-1] < losses[0]
  assert not np.array_equal(model.params['local3/weights'].numpy(), before)
  assert 1.0 <= float(state.loss_scale) <= grad_ops.INITIAL_LOSS_SCALE


@tutorial_convnet_only
def test_bfloat16_training_keeps_float32_variables():
  model = convnet.ConvNet(seed=1)
  # SGD 0.1 on one batch is chaotic (spikes above 8 near step 8; round-off
  # alone moves the loss at any one later step by +-1, so that whether it
  # learns depended on the CPU's bfloat16 kernels): at 0.02 the loss falls
  # without spikes, to 0.40-0.48 of its start in bfloat16 and float32 alike
  # on a batch of 64 (seeds 1 and 2, a Zen 1 EPYC, 2026-12-03), and to
  # 0.27-0.37 on the batch of 32 here, at half the time (2026-12-04).
  state = convnet.TrainState(model, compute_dtype=tf.bfloat16,
                             schedule=convnet.SCHEDULE._replace(
                                 learning_rate=0.02))
  images, labels = noisy_batch(32)
  step = tf.function(
      lambda: convnet.training(model, state, images, labels, 32))
  ce = [float(step()['cross_entropy']) for _ in range(40)]
  assert all(v.dtype == tf.float32 for v in model.trainable_variables)
  assert np.median(ce[-10:]) < 0.7 * ce[0]
  assert float(state.loss_scale) == 1.0 and not state.loss_scaling


def test_fast_lrn_equals_tensorflow_lrn():
  x = tf.random.stateless_normal([16, 12, 12, 64], [1, 2]) * 4
  g = tf.random.stateless_normal([16, 12, 12, 64], [3, 4])

  def value_and_grad(fn):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x)
      total = tf.reduce_sum(y * g)
    return y, tape.gradient(total, x)

  y, dx = value_and_grad(lrn.local_response_normalization)
  y_ref, dx_ref = value_and_grad(
      lambda v: tf.nn.local_response_normalization(v, **lrn.LRN))
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)
  # the edge channels see a truncated window, as in TensorFlow's op
  assert np.abs(dx[..., 0] - dx_ref[..., 0]).max() < 1e-5


def test_fast_lrn_with_bias_and_relu_folded_in():
  x = tf.random.stateless_normal([16, 12, 12, 64], [1, 2]) * 4
  b = tf.random.stateless_normal([64], [5, 6])
  g = tf.random.stateless_normal([16, 12, 12, 64], [3, 4])

  def value_and_grads(fn):
    with tf.GradientTape() as tape:
      tape.watch([x, b])
      y = fn(x, b)
      total = tf.reduce_sum(y * g)
    return [y] + tape.gradient(total, [x, b])

  got = value_and_grads(lrn.local_response_normalization)
  want = value_and_grads(lambda v, c: tf.nn.local_response_normalization(
      tf.nn.relu(v + c), **lrn.LRN))
  assert np.mean(got[1] == 0) > 0.3  # the ReLU's zeros reach the gradient
  for a, w, what in zip(got, want, ('value', 'x gradient', 'bias gradient')):
    np.testing.assert_allclose(a, w, rtol=1e-4, atol=2e-4, err_msg=what)


def test_fast_lrn_in_bfloat16_is_the_float32_function_rounded():
  x = tf.random.stateless_normal([8, 12, 12, 64], [5, 6]) * 4
  y16 = lrn.local_response_normalization(tf.cast(x, tf.bfloat16))
  assert y16.dtype == tf.bfloat16
  ref = tf.nn.local_response_normalization(
      tf.cast(tf.cast(x, tf.bfloat16), tf.float32), **lrn.LRN)
  np.testing.assert_allclose(tf.cast(y16, tf.float32), ref, rtol=8e-3,
                             atol=1e-6)


def cuda_convnet_top(num_classes=10, image_size=24, channels=3,
                     layers=convnet.layers):
  """docs/extending.md's exercise: local3 and local4 locally connected, as
  in cuda-convnet (3x3 filters of each position, 64 and 32 of them)."""
  table = layers(num_classes, image_size, channels)
  positions = table['local3'][0][0] // 64  # 6 x 6 maps of 64
  table['local3'] = ([positions, 3 * 3 * 64, 64], 0.04, 0.004, 0.1)
  table['local4'] = ([positions, 3 * 3 * 64, 32], 0.04, 0.004, 0.1)
  table['softmax_linear'] = ([positions * 32, num_classes], 0.01, 0.0, 0.0)
  return table


def test_a_locally_connected_layer_is_a_filter_per_position():
  rng = np.random.RandomState(0)
  x = rng.randn(2, 4, 4, 3).astype(np.float32)
  w = rng.randn(16, 3 * 3 * 3, 5).astype(np.float32)
  padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])  # SAME
  want = np.zeros((2, 4, 4, 5), np.float32)
  for i in range(4):
    for j in range(4):
      want[:, i, j] = padded[:, i:i + 3, j:j + 3].reshape(2, -1) @ w[i * 4 + j]
  np.testing.assert_allclose(convnet.convolve(x, tf.constant(w)), want,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('slices', [1, 2, 4])
@pytest.mark.parametrize('network', ['tutorial', 'cuda_convnet_top'])
def test_inference_is_the_tutorial_network(slices, network, monkeypatch):
  # Pooling before conv1's bias and ReLU, the fast LRN and slicing the batch
  # change neither the logits nor the gradients; nor in the exercise's
  # locally connected top layers.
  if network == 'cuda_convnet_top':
    monkeypatch.setattr(convnet, 'layers', cuda_convnet_top)
  model = convnet.ConvNet(seed=2)
  images, _ = noisy_batch(16, seed=3)

  def logits_and_grads(fn):
    with tf.GradientTape() as tape:
      logits = fn(model, images)
      total = tf.reduce_sum(logits * tf.range(1.0, 11.0))
    return logits, tape.gradient(total, list(model.params.values()))

  got, got_grads = logits_and_grads(
      lambda m, x: convnet.inference(m, x, tf.float32, slices)[0])
  want, want_grads = logits_and_grads(convnet.reference_inference)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  for name, g, w in zip(model.params, got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-5, err_msg=name)
  acts = convnet.inference(model, images, tf.float32, slices)[1]
  assert acts['conv1'].shape == [16, 24, 24, 64]  # for the summaries


def _resolve(argv, device, replicas=1):
  cli.parse(cifar10_train.FLAGS, argv)
  return config.resolve(cifar10_train.FLAGS, device, replicas, CIFAR10,
                        convnet, cifar10_input)


def test_slices_auto():
  for cores, batch, want in ((2, 128, 2), (2, 32, 1), (8, 128, 4), (1, 128, 1),
                             (3, 128, 2)):
    cpu = hardware.Device('CPU', None, cores, False)
    argv = ['--batch_size', str(batch)]
    assert _resolve(argv, cpu).slices == want, (cores, batch)
    assert _resolve(argv, cpu, replicas=2).slices == 1
  cpu = hardware.Device('CPU', None, 2, False)
  assert _resolve(['--slices', '4'], cpu).slices == 4
  gpu = hardware.Device('GPU', (8, 0), 8, True)
  assert _resolve([], gpu).slices == 1


def test_slices_that_do_not_divide_the_batch_are_a_flag_error(capsys):
  with pytest.raises(SystemExit) as e:
    cli.parse(cifar10_train.FLAGS, ['--slices', '3'])
  assert e.value.code == 2
  assert capsys.readouterr().err.strip().endswith(
      'error: --slices 3 does not divide --batch_size 128')


def test_precision_flags(capsys):
  amx = hardware.Device('CPU', None, 2, True)
  epyc = hardware.Device('CPU', None, 2, False)
  assert _resolve(['--use_fp16'], epyc).precision == 'float16'
  assert _resolve(['--use_bf16'], epyc).precision == 'bfloat16'
  assert _resolve(['--use_bf16=False'], amx).precision == 'float32'
  assert _resolve([], amx).precision == 'bfloat16'
  assert _resolve(['--use_bf16=auto'], amx).precision == 'bfloat16'
  assert _resolve([], epyc).precision == 'float32'
  assert _resolve(['--nouse_bf16'], amx).precision == 'float32'
  with pytest.raises(SystemExit):
    cli.parse(cifar10_train.FLAGS, ['--use_fp16', '--use_bf16'])
  assert capsys.readouterr().err.strip().endswith(
      'error: --use_fp16 and --use_bf16 exclude each other')


def test_mixed_precision_skips_overflowing_steps():
  model = convnet.ConvNet(seed=1)
  state = convnet.TrainState(model, compute_dtype=tf.float16)
  state.loss_scale.assign(1e30)  # float16 gradients overflow at this scale
  before = model.params['conv1/weights'].numpy()
  images, labels = noisy_batch(16)
  convnet.training(model, state, images, labels, 16)
  np.testing.assert_array_equal(model.params['conv1/weights'].numpy(), before)
  assert float(state.loss_scale) == pytest.approx(5e29)


# --- cifar10_train.py -------------------------------------------------------

@pytest.mark.parametrize('values', [
    np.random.default_rng(0).normal(size=(64, 5, 7)),
    np.arange(1000.0) ** 2, np.full((10,), 3.5), np.array([0.0, 1.0])])
def test_histogram_buckets_equal_tensorboard(values):
  from tensorboard.plugins.histogram import summary_v2
  ours = summaries.histogram_buckets(tf.constant(values, tf.float32)).numpy()
  ref = summary_v2._buckets(tf.constant(values, tf.float32),
                            bucket_count=30).numpy()
  np.testing.assert_allclose(ours[:, :2], ref[:, :2], rtol=1e-6)
  np.testing.assert_array_equal(ours[:, 2], ref[:, 2])


@pytest.mark.slow
def test_train_writes_checkpoints_and_summaries(shared_bin_dir, tmp_path,
                                                capsys):
  train_dir = str(tmp_path / 'train')
  assert cifar10_train.main(train_args(
      shared_bin_dir, train_dir, '--max_steps', '4', '--summary_steps',
      '2')) == 0
  out = capsys.readouterr().out
  import re
  lines = re.findall(
      r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: step (\d+), '
      r'loss = \d+\.\d\d \(\d+\.\d examples/sec; '
      r'\d+\.\d{3} sec/batch(; includes start-up)?\)$', out, re.M)
  # steps 1 (the summary step's first call) and 3 (the loop's first call)
  # include tracing, and say so
  assert lines == [('1', '; includes start-up'), ('2', ''),
                   ('3', '; includes start-up'), ('4', '')]
  assert tf.train.latest_checkpoint(train_dir).endswith('ckpt-4')
  acc, tags = event_tags(train_dir)
  want = {'learning_rate', 'total_loss', 'total_loss (raw)', 'cross_entropy',
          'cross_entropy (raw)', 'local3/weight_loss (raw)', 'images',
          'conv1/activations', 'conv1/sparsity', 'local4/sparsity',
          'conv1/weights', 'conv1/weights/gradients',
          'softmax_linear/biases/gradients'}
  assert want <= tags
  assert len(acc.Graph().node) > 100  # the Graphs tab's graph
  assert [e.step for e in acc.Tensors('total_loss (raw)')] == [1, 2, 4]
  lr = tf.make_ndarray(acc.Tensors('learning_rate')[0].tensor_proto)
  assert float(lr) == pytest.approx(0.1)


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted_run(shared_bin_dir, tmp_path):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  assert cifar10_train.main(train_args(shared_bin_dir, a,
                                        '--max_steps', '6')) == 0
  assert cifar10_train.main(train_args(shared_bin_dir, b,
                                        '--max_steps', '3')) == 0
  # the resumed run keeps the checkpoint's seed, whatever --seed says
  assert cifar10_train.main(train_args(shared_bin_dir, b, '--max_steps', '6',
                                        '--seed', '99')) == 0
  ra, aa = checkpoint_params(tf.train.latest_checkpoint(a))
  rb, ab = checkpoint_params(tf.train.latest_checkpoint(b))
  assert tf.train.latest_checkpoint(b).endswith('ckpt-6')
  for k in ra:
    np.testing.assert_allclose(ra[k], rb[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aa[k], ab[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fresh_sets_the_old_run_aside(shared_bin_dir, tmp_path):
  d = str(tmp_path / 't')
  cifar10_train.main(train_args(shared_bin_dir, d, '--max_steps', '2'))
  cifar10_train.main(train_args(shared_bin_dir, d, '--max_steps', '1',
                                 '--fresh'))
  assert tf.train.latest_checkpoint(d).endswith('ckpt-1')
  old = [e for e in os.listdir(d) if e.startswith('previous-')]
  assert len(old) == 1
  assert tf.train.latest_checkpoint(os.path.join(d, old[0])).endswith('ckpt-2')


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    shared_bin_dir, tmp_path, monkeypatch, capsys):
  d = str(tmp_path / 't')
  assert cifar10_train.main(train_args(shared_bin_dir, d,
                                        '--max_steps', '2')) == 0
  status = run_control.run_main(cifar10_train.main, train_args(
      shared_bin_dir, d, '--max_steps', '50', '--save_checkpoint_secs',
      '0.001', '--learning_rate', '1e9'))
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1
  assert len(err) == 1 and re_search(r'error: loss is (nan|inf) at step \d+',
                                     err[0])
  # checkpoints made before the NaN are fine; none holds a NaN
  for path in tf.train.get_checkpoint_state(d).all_model_checkpoint_paths:
    raw, _ = checkpoint_params(path)
    assert all(np.isfinite(v).all() for v in raw.values())


def re_search(pattern, text):
  import re
  return re.search(pattern, text)


@pytest.mark.parametrize('flag,value', [('--batch_size', '0'),
                                        ('--max_steps', '0'),
                                        ('--log_frequency', '-3'),
                                        ('--batch_size', 'many'),
                                        ('--slices', '0'),
                                        ('--slices', 'many')])
def test_bad_flags_one_line_error(flag, value, capsys):
  with pytest.raises(SystemExit) as e:
    cli.parse(cifar10_train.FLAGS, [flag, value])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and flag in err[0]


def test_help_describes_each_flag(capsys):
  with pytest.raises(SystemExit):
    cli.parse(cifar10_train.FLAGS, ['-h'])
  out = capsys.readouterr().out
  for flag in ('--train_dir', '--max_steps', '--log_frequency', '--batch_size',
               '--data_dir', '--[no]use_fp16', '--[no]log_device_placement',
               '--seed', '--[no]fresh', '--data_source', '--slices',
               '--[no]use_bf16', '--[no]jit_compile'):
    assert flag + ':' in out, flag


def test_missing_data_one_line_error(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(CIFAR10.source_env, str(tmp_path / 'none.tgz'))
  status = run_control.run_main(cifar10_train.main, [
      '--data_dir',
      str(tmp_path / 'data'), '--train_dir',
      str(tmp_path / 't')
  ])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1 and 'data_source' in err[0]


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM,
                                 signal.SIGHUP])
@pytest.mark.slow
def test_signal_saves_a_checkpoint_before_exiting(shared_bin_dir, tmp_path,
                                                  sig):
  d = str(tmp_path / 't')
  proc = start_script(['cifar10_train.py'] + train_args(
      shared_bin_dir, d, '--steps_per_loop', '20'))
  try:
    wait_for(proc, r'step 5, loss')
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 128 + sig, rest
  step = int(tf.train.latest_checkpoint(d).rsplit('-', 1)[1])
  # saved at the end of the call it came in: loops run steps 2-21, 22-41,
  # ... (step 1 and every 100th write summaries)
  assert step > 5 and (step - 1) % 20 == 0 or step % 100 == 0, step
  assert 'saved checkpoint' in rest
  # the signal's line at once, while a call of up to 20 steps runs (their
  # lines print after it); every other line in time order
  stamped = re.findall(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+): (.*)$',
                       rest, re.M)
  assert [line for _, line in stamped if line.startswith('caught')] == [
      'caught %s; saving a checkpoint before exiting' % sig.name], rest
  times = [t for t, line in stamped if not line.startswith('caught')]
  assert times == sorted(times), rest
  # the last word: the checkpoint, and that the same command resumes
  assert stamped[-1][1] == (
      'stopped by %s at step %d of 1000000; the same command resumes from '
      '%s' % (sig.name, step, os.path.join(d, 'ckpt-%d' % step)))


# --- cifar10_eval.py --------------------------------------------------------

@pytest.fixture(scope='module')
def trained(shared_bin_dir, tmp_path_factory):
  d = str(tmp_path_factory.mktemp('trained'))
  cifar10_train.main(train_args(shared_bin_dir, d, '--max_steps', '5'))
  return d


def test_eval_restores_the_moving_averages(shared_bin_dir, trained):
  path = tf.train.latest_checkpoint(trained)
  raw, avg = checkpoint_params(path)
  ev = evaluation.Evaluator(shared_bin_dir, 'test', 10000, CIFAR10,
                            convnet, cifar10_input)
  assert ev.restore(path) == 5
  for k, v in ev.model.params.items():
    np.testing.assert_array_equal(v.numpy(), avg[k])
  assert any(not np.array_equal(raw[k], avg[k]) for k in raw)
  ev_raw = evaluation.Evaluator(shared_bin_dir, 'test', 10000, CIFAR10,
                                convnet, cifar10_input, raw_weights=True)
  ev_raw.restore(path)
  for k, v in ev_raw.model.params.items():
    np.testing.assert_array_equal(v.numpy(), raw[k])


def test_eval_counts_each_example_once(shared_bin_dir, trained):
  ev = evaluation.Evaluator(shared_bin_dir, 'test', 10000, CIFAR10,
                            convnet, cifar10_input)
  ev.restore(tf.train.latest_checkpoint(trained))
  precision, confusion, seen = ev.evaluate()
  assert seen == 200 and confusion.sum() == 200
  assert confusion.sum(axis=1).tolist() == [20] * 10
  assert precision == np.trace(confusion) / 200
  ev = evaluation.Evaluator(shared_bin_dir, 'train_eval', 777, CIFAR10,
                            convnet, cifar10_input)
  ev.restore(tf.train.latest_checkpoint(trained))
  assert ev.evaluate()[2] == 777


def test_eval_run_once_writes_summaries(shared_bin_dir, trained, tmp_path,
                                        capsys):
  e = str(tmp_path / 'eval')
  assert cifar10_eval.main(['--checkpoint_dir', trained, '--eval_dir', e,
                            '--data_dir', shared_bin_dir, '--run_once']) == 0
  out = capsys.readouterr().out
  assert re_search(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: precision @ 1 = '
                   r'0\.\d{3}$', out.splitlines()[0])
  assert 'airplane' in out and 'truck' in out
  acc, tags = event_tags(e)
  assert {'Precision @ 1', 'confusion_matrix'} <= tags
  assert acc.Tensors('Precision @ 1')[0].step == 5


def test_an_eval_dir_holds_one_kind_of_evaluation(shared_bin_dir, trained,
                                                   tmp_path, capsys):
  # a result of the moving averages is not held for the raw weights, nor
  # one of 10,000 test images for 100 of them, nor the test set's for the
  # training set's: each is refused in one line, and nothing is written
  e = str(tmp_path / 'eval')
  args = ['--checkpoint_dir', trained, '--eval_dir', e, '--data_dir',
          shared_bin_dir, '--run_once']
  assert cifar10_eval.main(args) == 0
  capsys.readouterr()
  files = {p: os.path.getsize(p) for p in glob.glob(e + '/*')}
  held = 'eval_data test, num_examples 10000, moving averages'
  for more, kind in [
      (['--raw_weights'], 'eval_data test, num_examples 10000, raw weights'),
      (['--num_examples', '100'],
       'eval_data test, num_examples 100, moving averages'),
      (['--eval_data', 'train_eval'],
       'eval_data train_eval, num_examples 10000, moving averages')]:
    status = run_control.run_main(cifar10_eval.main, args + more)
    out, err = capsys.readouterr()
    assert status == 1 and out == '' and err.strip().endswith(
        '--eval_dir %s holds evaluations of %s; this one is of %s: give it '
        'a --eval_dir of its own' % (e, held, kind)), err
    assert len(err.strip().splitlines()) == 1
    assert {p: os.path.getsize(p) for p in glob.glob(e + '/*')} == files
  # its own folder evaluates it; the same kind again is held, not written
  assert cifar10_eval.main(args[:3] + [str(tmp_path / 'raw')] + args[4:]
                           + ['--raw_weights']) == 0
  assert '(held in' not in capsys.readouterr().out
  assert cifar10_eval.main(args) == 0
  assert '(held in %s)' % e in capsys.readouterr().out
  text = tf.make_ndarray(event_tags(e)[0].Tensors('checkpoint')[0]
                         .tensor_proto)
  assert text.item().decode().endswith('; %s)' % held), text


def test_eval_without_checkpoint(tmp_path, shared_bin_dir, capsys):
  status = run_control.run_main(cifar10_eval.main, [
      '--checkpoint_dir', str(tmp_path / 'none'), '--eval_dir',
      str(tmp_path / 'e'), '--data_dir', shared_bin_dir, '--run_once'])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1 and err[0].endswith(
      '--checkpoint_dir %s does not exist' % (tmp_path / 'none'))
  (tmp_path / 'empty').mkdir()
  status = run_control.run_main(cifar10_eval.main, [
      '--checkpoint_dir', str(tmp_path / 'empty'), '--eval_dir',
      str(tmp_path / 'e'), '--data_dir', shared_bin_dir, '--run_once'])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1 and 'no checkpoint in' in err[0]


@pytest.mark.slow
def test_the_watching_evaluator_keeps_up_and_writes_each_step_once(
    shared_bin_dir, tmp_path, capsys):
  t, e = str(tmp_path / 't'), str(tmp_path / 'e')
  proc = start_script([
      'cifar10_eval.py', '--checkpoint_dir', t, '--eval_dir', e, '--data_dir',
      shared_bin_dir, '--eval_interval_secs', '60'])
  try:
    # a folder that is not there yet is said once, and waited for
    lines = wait_for(proc, '--checkpoint_dir %s does not exist yet; waiting '
                     'for it' % t)
    cifar10_train.main(train_args(shared_bin_dir, t, '--max_steps', '2'))
    saved = time.time()
    lines += wait_for(proc, r'precision @ 1 = ')
    # noticed within seconds (it looks every 2 s), not --eval_interval_secs
    assert time.time() - saved < 15, time.time() - saved
    lines += wait_for(proc, 'waiting for a new checkpoint in %s ' % t)
    cifar10_train.main(train_args(shared_bin_dir, t, '--max_steps', '3'))
    # the interval is the least time between two evaluations
    lines += wait_for(proc, r'a new checkpoint in %s; evaluating it in \d+ s '
                      r'\(--eval_interval_secs 60\)' % t)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 130 and 'stopped' in rest  # as the trainer
  # idle, it says it stops (not that it finishes an evaluation)
  assert 'caught SIGINT; stopping\n' in rest and 'in hand' not in rest
  assert sum('does not exist yet' in l for l in lines) == 1
  acc, _ = event_tags(e)
  assert [ev.step for ev in acc.Tensors('Precision @ 1')] == [2]
  # a step already in eval_dir is not written again, --run_once or not
  run_once = ['--checkpoint_dir', t, '--eval_dir', e, '--data_dir',
              shared_bin_dir, '--run_once']
  capsys.readouterr()
  assert cifar10_eval.main(run_once) == 0
  out = capsys.readouterr().out  # step 3: new
  held = re.search(r'precision @ 1 = (0\.\d{3}|1\.000)\n', out).group(1)
  assert cifar10_eval.main(run_once) == 0
  out = capsys.readouterr().out  # the precision it holds, not written again
  assert re.search(r': precision @ 1 = %s \(held in %s\)\n  step 3 \(.*'
                   r'ckpt-3\) is already evaluated there; not writing it '
                   r'again' % (held, re.escape(e)), out), out
  acc, _ = event_tags(e)
  assert [ev.step for ev in acc.Tensors('Precision @ 1')] == [2, 3]
  # a new run to the same step (train_dir emptied): other weights at the
  # same path, evaluated, saying so; and then not again
  shutil.rmtree(t)
  cifar10_train.main(train_args(shared_bin_dir, t, '--max_steps', '3',
                                '--seed', '99'))
  assert cifar10_eval.main(run_once) == 0
  out = capsys.readouterr().out
  assert ('Note: %s/ckpt-3 holds other weights than the step 3 evaluated '
          'before in %s (a new training run); evaluating it at step 3 too'
          % (t, e)) in out and 'precision @ 1 = ' in out, out
  assert cifar10_eval.main(run_once) == 0
  assert 'is already evaluated' in capsys.readouterr().out
  acc, _ = event_tags(e)
  assert [ev.step for ev in acc.Tensors('Precision @ 1')] == [2, 3, 3]


@pytest.mark.slow
def test_the_watching_evaluator_exits_143_on_sigterm(trained, shared_bin_dir,
                                                     tmp_path):
  proc = start_script([
      'cifar10_eval.py', '--checkpoint_dir', trained, '--eval_dir',
      str(tmp_path / 'e'), '--data_dir', shared_bin_dir])
  try:
    wait_for(proc, 'waiting for a new checkpoint in %s ' % trained)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 143 and 'caught SIGTERM; stopping' in rest


@pytest.mark.slow
def test_the_watching_evaluator_takes_a_repaired_checkpoint(shared_bin_dir,
                                                            tmp_path):
  # the only checkpoint damaged before the evaluator's first look: named
  # once, then evaluated within seconds of its repair (restored from a
  # backup: the same names, other sizes and times)
  t, e = str(tmp_path / 't'), str(tmp_path / 'e')
  cifar10_train.main(train_args(shared_bin_dir, t, '--max_steps', '1'))
  data = os.path.join(t, 'ckpt-1.data-00000-of-00001')
  good = open(data, 'rb').read()
  with open(data, 'r+b') as f:
    f.truncate(100)
  proc = start_script([
      'cifar10_eval.py', '--checkpoint_dir', t, '--eval_dir', e, '--data_dir',
      shared_bin_dir])
  try:
    lines = wait_for(proc, 'waiting for a new checkpoint in %s ' % t)
    assert sum('Skipping checkpoint %s/ckpt-1: ' % t in l
               for l in lines) == 1, lines
    with open(data, 'wb') as f:
      f.write(good)
    repaired = time.time()
    lines += wait_for(proc, r'precision @ 1 = ')
    assert time.time() - repaired < 15, time.time() - repaired
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 130 and 'Traceback' not in rest, rest
  assert sum('Skipping checkpoint' in l for l in lines) == 1, lines
