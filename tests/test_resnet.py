"""ResNet-20 (--model resnet20): the paper's architecture and schedule, its
augmentation, and batch normalization under every feature: slices, moving
averages, resume, several replicas, the export in inference mode."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cifar10_classify
import cifar10_eval
import cifar10_export
import cifar10_input
import models
import resnet20
from cifar10_toolkit import checkpoints
from cifar10_toolkit import cluster
from cifar10_toolkit import errors
from cifar10_toolkit import device_input
from cifar10_toolkit import interface
from cifar10_toolkit import run_record
from conftest import ROOT
from conftest import train_args
from conftest import write_bin
from data_sets import CIFAR10

LIB = interface.input_for(resnet20, cifar10_input)


def _images(n=8, seed=0):
  return tf.constant(np.random.default_rng(seed).normal(
      size=(n, 32, 32, 3)), tf.float32)


def test_the_papers_architecture_and_schedule():
  assert models.get('resnet20') is resnet20 and not interface.missing(resnet20)
  model = resnet20.Model(0, 10, 32)
  count = lambda d: sum(int(np.prod(v.shape)) for v in d.values())
  assert count(model.params) == 269722  # 0.27M, the paper's table 6
  assert count(model.stats) == 2 * (16 * 7 + 32 * 6 + 64 * 6)
  convs = [k for k in model.params if k.endswith('/weights')]
  assert len(convs) == 20  # 19 convolutions and the dense layer
  logits, acts = resnet20.inference(model, _images())
  assert logits.shape == [8, 10]
  assert [a.shape.as_list() for a in acts.values()] == [
      [8, 32, 32, 16], [8, 16, 16, 32], [8, 8, 8, 64]]
  # 0.1, divided by 10 at steps 32,000 and 48,000 of batch 128
  lr = lambda step: float(resnet20.learning_rate(step, 128))
  assert [lr(s) for s in (0, 31999, 32000, 47999, 48000, 63999)] == \
      pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
def test_the_shortcuts_subsample_is_every_other_pixel_bit_for_bit(dtype):
  x = tf.cast(_images(4) * 3.0 - 1.0, dtype)
  dy = tf.cast(_images(4, seed=1)[:, :16, :16, :], dtype)
  results = []
  for subsample in (lambda x: x[:, ::2, ::2, :],
                    resnet20._every_other_pixel):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = subsample(x)
    results.append((y, tape.gradient(y, x, dy)))
  (y0, g0), (y1, g1) = results
  assert y1.dtype == dtype and y1.shape == [4, 16, 16, 3]
  np.testing.assert_array_equal(tf.cast(y0, tf.float32),
                                tf.cast(y1, tf.float32))
  np.testing.assert_array_equal(tf.cast(g0, tf.float32),
                                tf.cast(g1, tf.float32))


def test_batch_norm_normalizes_the_whole_batch_across_slices():
  images, labels = _images(16), tf.constant(np.arange(16) % 10, tf.int32)
  model = resnet20.Model(1, 10, 32)
  one = resnet20.inference(model, images)[0]
  two = resnet20.inference(model, images, slices=4)[0]
  np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)
  # In training, each BN takes the statistics of the whole batch: a step in
  # 4 slices is a step in one.
  runs = []
  for slices in (1, 4):
    m = resnet20.Model(1, 10, 32)
    s = resnet20.TrainState(m, 1, tf.float32, 16)
    out = resnet20.training(m, s, images, labels, 16, slices=slices)
    runs.append((m, float(out['total_loss'])))
  assert runs[0][1] == pytest.approx(runs[1][1], rel=1e-6)
  for k in runs[0][0].stats:
    np.testing.assert_allclose(runs[0][0].stats[k], runs[1][0].stats[k],
                               rtol=1e-4, atol=1e-6, err_msg=k)
  # Those statistics are the batch's: the first BN's mean, after one step,
  # is 0.1 of the first convolution's mean over the batch.
  m, s = resnet20.Model(1, 10, 32), None
  conv0 = tf.nn.conv2d(images, m.params['conv0/weights'], 1, 'SAME')
  s = resnet20.TrainState(m, 1, tf.float32, 16)
  resnet20.training(m, s, images, labels, 16)
  np.testing.assert_allclose(m.stats['conv0/bn/mean'],
                             0.1 * tf.reduce_mean(conv0, [0, 1, 2]),
                             rtol=1e-4, atol=1e-6)


def test_moving_averages_cover_the_batch_norm_statistics():
  images, labels = _images(16), tf.constant(np.arange(16) % 10, tf.int32)
  model = resnet20.Model(2, 10, 32)
  state = resnet20.TrainState(model, 2, tf.float32, 16)
  assert set(state.averages) == set(model.params) | set(model.stats)
  for _ in range(3):
    resnet20.training(model, state, images, labels, 16)
  stats = {k: v.numpy() for k, v in model.stats.items()}
  averages = {k: state.averages[k].numpy() for k in model.stats}
  resnet20.use_moving_averages(model, state)
  for k in model.stats:  # the model now holds the averaged statistics
    np.testing.assert_array_equal(model.stats[k], averages[k])
    assert not np.array_equal(stats[k], averages[k]), k


def test_the_augmentation_pads_crops_and_flips(shared_bin_dir):
  images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3),
                                             np.uint8)
  got = LIB.distort_images(tf.constant(images), [3, 4]).numpy()
  d = {k: v.numpy() for k, v in cifar10_input.distortion_draws(
      [3, 4], 12, 9).items()}
  padded = np.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]]).astype(float)
  for i in range(12):
    r, c = d['offsets'][i]
    x = padded[i, r:r + 32, c:c + 32]
    if d['flip'][i].item():
      x = x[:, ::-1]
    np.testing.assert_array_equal(got[i], x)  # not standardized: the model
  assert LIB.crop_size(32) == 32 and cifar10_input.crop_size(32) == 24
  # the data on the device makes the same batches as tf.data
  feed = device_input.DeviceInput(shared_bin_dir, 32, 5, CIFAR10, LIB)
  want = next(iter(LIB.distorted_inputs(shared_bin_dir, 32, 5, 3)))
  got = tf.function(lambda: feed.replica_batch(feed.next_batch(
      tf.constant(3, tf.int64))))()
  np.testing.assert_array_equal(want[0], got[0])
  np.testing.assert_array_equal(want[1], got[1])


def test_the_input_is_the_training_sets_per_pixel_mean_subtracted():
  images = np.random.default_rng(4).integers(0, 256, (50, 32, 32, 3),
                                             np.uint8)
  model, plain = resnet20.Model(5, 10, 32), resnet20.Model(5, 10, 32)
  np.testing.assert_array_equal(model.input_mean, 0)
  resnet20.adapt(model, images)
  mean = images.astype(np.float64).mean(axis=0)
  np.testing.assert_allclose(model.input_mean, mean, rtol=1e-6)
  x = _images(4) * 60.0
  np.testing.assert_allclose(resnet20.inference(model, x + mean)[0],
                             resnet20.inference(plain, x)[0], rtol=1e-4,
                             atol=1e-4)


def test_a_checkpoint_without_the_mean_image_is_refused_in_one_line(
    tmp_path):
  old = resnet20.Model(6, 10, 32)
  del old.input_mean  # as ResNet-20 was before it had one
  path = tf.train.Checkpoint(model=old).save(str(tmp_path / 'ckpt'))
  with pytest.raises(errors.UsageError) as e:
    checkpoints.restore(tf.train.Checkpoint(model=resnet20.Model(6, 10, 32)),
                        path)
  assert str(e.value) == (
      'checkpoint %s lacks input_mean of this model (made by an earlier '
      'version of the model module?)' % path)


def test_several_replicas_each_normalize_their_own_batch():
  # (reduced through one device: collective instance keys of strategies
  # made earlier in this process, for other models, would collide)
  strategy = tf.distribute.MirroredStrategy(
      cluster.split_device('CPU', 2),
      cross_device_ops=tf.distribute.ReductionToOneDevice())
  images, labels = _images(16), tf.constant(np.arange(16) % 10, tf.int32)
  with strategy.scope():
    model = resnet20.Model(3, 10, 32)
    state = resnet20.TrainState(model, 3, tf.float32, 16)
  per_replica = strategy.experimental_distribute_values_from_function(
      lambda ctx: (images[8 * ctx.replica_id_in_sync_group:][:8],
                   labels[8 * ctx.replica_id_in_sync_group:][:8]))
  strategy.run(tf.function(lambda b: resnet20.training(
      model, state, b[0], b[1], 16)), args=(per_replica,))
  # the statistics kept are the first replica's batch's
  conv0 = tf.nn.conv2d(images[:8], resnet20.Model(3, 10, 32).params[
      'conv0/weights'], 1, 'SAME')
  np.testing.assert_allclose(model.stats['conv0/bn/mean'],
                             0.1 * tf.reduce_mean(conv0, [0, 1, 2]),
                             rtol=1e-4, atol=1e-6)


def _checkpoint(path):
  reader = tf.train.load_checkpoint(path)
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.endswith('VARIABLE_VALUE')}


@pytest.mark.slow
def test_resnet20_through_every_script_and_an_exact_resume(tmp_path, capsys):
  data = str(tmp_path / 'data')
  write_bin(data)
  once, twice = str(tmp_path / 'once'), str(tmp_path / 'twice')
  args = ['--model', 'resnet20', '--steps_per_loop', '2']
  # the script as a user runs it, so with oneDNN (models.ONEDNN), which
  # TensorFlow's info lines (TF_CPP_MIN_LOG_LEVEL=0) say is on; then the
  # same run stopped at 2 and resumed
  for train_dir, steps, level in ((once, '4', '0'), (twice, '2', '2'),
                                  (twice, '4', '2')):
    proc = subprocess.run(
        [sys.executable, 'cifar10_train.py'] + train_args(
            data, train_dir, '--max_steps', steps) + args,
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL=level))
    assert proc.returncode == 0, proc.stderr
    assert ('oneDNN custom operations are on' in proc.stderr) == (
        level == '0'), proc.stderr
  assert 'Training from step 2 to 4' in proc.stdout
  a, b = (_checkpoint(tf.train.latest_checkpoint(d)) for d in (once, twice))
  assert a.keys() == b.keys()
  assert any(k.startswith('model/stats/') for k in a)
  assert any(k.startswith('state/momentum/') for k in a)
  images, _ = cifar10_input.decode_records(cifar10_input.load_records(
      cifar10_input.training_files(data)))  # adapt(), kept through resume
  np.testing.assert_allclose(a['model/input_mean/.ATTRIBUTES/VARIABLE_VALUE'],
                             np.mean(images, axis=0), rtol=1e-5)
  for k in a:  # weights, BN statistics, momentum, averages: the same bits
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert run_record.read(tf.train.latest_checkpoint(once)).model == 'resnet20'

  capsys.readouterr()
  assert cifar10_eval.main(['--model', 'resnet20', '--data_dir', data,
                            '--checkpoint_dir', once, '--eval_dir',
                            str(tmp_path / 'eval'), '--run_once']) == 0
  assert 'precision @ 1 = ' in capsys.readouterr().out

  export = str(tmp_path / 'export')
  assert cifar10_export.main(['--model', 'resnet20', '--checkpoint_dir',
                              once, '--export_dir', export]) == 0
  loaded = tf.saved_model.load(export)
  assert "center 32x32 crop and the model's own normalization" in loaded.\
      signatures['metadata']()['input'].numpy().decode()
  serve = loaded.signatures['serving_default']
  pictures = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3),
                                               np.uint8)
  together = serve(images=tf.constant(pictures))['probabilities'].numpy()
  alone = np.concatenate([serve(images=tf.constant(pictures[i:i + 1]))[
      'probabilities'].numpy() for i in range(5)])
  # Inference mode: an image's classes do not depend on the others in its
  # batch (BN on the batch would make them).
  np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)

  image = str(tmp_path / 'ship.png')
  tf.io.write_file(image, tf.io.encode_png(tf.constant(pictures[0])))
  lines = []
  for where in (['--model', 'resnet20', '--checkpoint_dir', once],
                ['--export_dir', export]):
    capsys.readouterr()
    assert cifar10_classify.main([image] + where) == 0
    lines.append(capsys.readouterr().out)
  assert lines[0] == lines[1]
