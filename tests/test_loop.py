"""The training loop's shape changes nothing: --steps_per_loop and
--data_on_device give the same batches, weights, logs and stops."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import cifar10_input
import convnet
from cifar10_toolkit import console
from cifar10_toolkit import device_input
import cifar10_multi_gpu_train
import cifar10_train
from cifar10_toolkit import run_control
from conftest import event_tags, start_script, train_args, wait_for
from cifar10_toolkit import cluster
from cifar10_toolkit import run_record
from data_sets import CIFAR10

LOG_LINE = (r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: step (\d+), loss = '
            r'\d+\.\d\d \(\d+\.\d examples/sec; \d+\.\d{3} sec/batch'
            r'(?:; includes start-up)?\)$')


def _state(path):
  """Every variable a checkpoint holds: weights, averages, loss averages,
  global step, seed (not its run record, the data set and schedule: the
  runs compared have the same, run_record.read)."""
  reader = tf.train.load_checkpoint(path)
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.endswith('VARIABLE_VALUE') and not k.startswith('record/')}


def _assert_same_state(a, b):
  assert run_record.read(a) == run_record.read(b)
  sa, sb = _state(a), _state(b)
  # the model's and the train state's (10 + 20 in the tutorial's network:
  # the averages, loss averages, global step, seed, global batch, loss
  # scale, good steps), and the checkpoint's save counter
  model = convnet.ConvNet()
  want = len(model.variables) + len(convnet.TrainState(model).variables) + 1
  assert sa.keys() == sb.keys() and len(sa) == want
  for k in sa:
    np.testing.assert_allclose(sa[k], sb[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _strategy(replicas):
  if replicas == 1:
    return tf.distribute.get_strategy()
  return tf.distribute.MirroredStrategy(
      cluster.split_device('CPU', replicas))


@pytest.mark.parametrize('replicas,slices', [(1, 1), (2, 1), (1, 3), (2, 2)])
@pytest.mark.parametrize('seed', [1, 9])
def test_device_batches_equal_tf_data_batches(shared_bin_dir, replicas, seed,
                                              slices):
  # 1,000 training examples, global batch 96: step 10 straddles epochs 0 and 1
  batch, start = 96 // replicas, 8
  strategy = _strategy(replicas)
  feed = device_input.DeviceInput(shared_bin_dir, batch, seed, CIFAR10,
                                  cifar10_input, strategy)
  dataset = iter(strategy.distribute_datasets_from_function(
      lambda ctx: cifar10_input.distorted_inputs(shared_bin_dir, batch, seed,
                                                 start, ctx)))

  @tf.function
  def device_batch(step):
    return strategy.run(feed.replica_batch,
                        args=(feed.next_batch(step), slices))

  for step in range(start, start + 6):
    want = next(dataset)
    got = device_batch(tf.constant(step, tf.int64))
    for part in range(2):  # images, labels
      w = strategy.experimental_local_results(want[part])
      g = strategy.experimental_local_results(got[part])
      assert len(w) == len(g) == replicas
      for r in range(replicas):
        np.testing.assert_array_equal(w[r].numpy(), g[r].numpy(),
                                      err_msg='step %d replica %d' % (step, r))


def _run(data_dir, train_dir, steps, per_loop, on_device, *extra):
  return cifar10_train.main(train_args(data_dir, train_dir) + [
      '--max_steps', str(steps), '--steps_per_loop', str(per_loop),
      '--data_on_device=' + on_device, '--log_frequency', '3'] + list(extra))


@pytest.mark.slow
@pytest.mark.parametrize('on_device', ['true', 'false'])
def test_steps_per_loop_changes_nothing(shared_bin_dir, tmp_path, capsys,
                                        on_device):
  one, seven = str(tmp_path / 'one'), str(tmp_path / 'seven')
  assert _run(shared_bin_dir, one, 21, 1, on_device) == 0
  logged_one = re.findall(LOG_LINE, capsys.readouterr().out, re.M)
  assert _run(shared_bin_dir, seven, 21, 7, on_device) == 0
  logged_seven = re.findall(LOG_LINE, capsys.readouterr().out, re.M)
  assert logged_one == logged_seven == [str(s) for s in range(3, 22, 3)]
  _assert_same_state(tf.train.latest_checkpoint(one),
                     tf.train.latest_checkpoint(seven))


@pytest.mark.slow
def test_data_on_device_changes_nothing(shared_bin_dir, tmp_path):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  assert _run(shared_bin_dir, a, 5, 3, 'true') == 0
  assert _run(shared_bin_dir, b, 5, 3, 'false') == 0
  # The batches are bit-identical (test above), but inside one graph with the
  # model the distortions' arithmetic is fused differently: the weights
  # differ by 4e-9 after one step, and (learning rate 0.1, random data) that
  # round-off doubles each step: 6e-8 at step 5, 2e-5 at step 21.
  _assert_same_state(tf.train.latest_checkpoint(a),
                     tf.train.latest_checkpoint(b))


@pytest.mark.slow
@pytest.mark.parametrize('on_device', ['true', 'false'])
def test_two_replicas_steps_per_loop_changes_nothing(shared_bin_dir, tmp_path,
                                                     on_device):
  dirs = []
  for per_loop in (1, 7):
    d = str(tmp_path / str(per_loop))
    assert cifar10_multi_gpu_train.main(train_args(shared_bin_dir, d) + [
        '--max_steps', '21', '--steps_per_loop', str(per_loop),
        '--data_on_device=' + on_device, '--batch_size', '16',
        '--logical_devices', '2']) == 0
    dirs.append(d)
  _assert_same_state(*[tf.train.latest_checkpoint(d) for d in dirs])


@pytest.mark.slow
def test_slices_change_nothing(shared_bin_dir, tmp_path, capsys):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  assert _run(shared_bin_dir, one, 5, 3, 'true', '--slices', '1') == 0
  assert 'in 2 slices' not in capsys.readouterr().out
  assert _run(shared_bin_dir, two, 5, 3, 'true', '--slices', '2') == 0
  assert 'batch 32 in 2 slices' in capsys.readouterr().out
  # the same step, summed in another order: equal to round-off
  _assert_same_state(tf.train.latest_checkpoint(one),
                     tf.train.latest_checkpoint(two))


@pytest.mark.slow
def test_slices_with_two_replicas(shared_bin_dir, tmp_path):
  dirs = []
  for slices in ('1', '2'):
    d = str(tmp_path / slices)
    assert cifar10_multi_gpu_train.main(train_args(shared_bin_dir, d) + [
        '--max_steps', '5', '--steps_per_loop', '3', '--batch_size', '16',
        '--logical_devices', '2', '--slices', slices]) == 0
    dirs.append(d)
  _assert_same_state(*[tf.train.latest_checkpoint(d) for d in dirs])


def test_slices_that_do_not_divide_the_batch(shared_bin_dir, tmp_path,
                                             capsys):
  d = str(tmp_path / 't')
  with pytest.raises(SystemExit) as e:  # a flag error: status 2
    run_control.run_main(cifar10_train.main, train_args(
        shared_bin_dir, d) + ['--max_steps', '2', '--slices', '3'])
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2 and len(err) == 1, err
  assert not os.path.exists(d)
  assert '--slices 3 does not divide --batch_size 32' in err[0]


@pytest.mark.slow
def test_stop_and_resume_with_long_loops(shared_bin_dir, tmp_path):
  whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
  assert _run(shared_bin_dir, whole, 21, 7, 'true') == 0
  assert _run(shared_bin_dir, parts, 10, 7, 'true') == 0
  assert _run(shared_bin_dir, parts, 21, 7, 'true') == 0
  _assert_same_state(tf.train.latest_checkpoint(whole),
                     tf.train.latest_checkpoint(parts))


@pytest.mark.slow
def test_summaries_land_at_the_same_steps(shared_bin_dir, tmp_path):
  d = str(tmp_path / 't')
  assert _run(shared_bin_dir, d, 12, 7, 'true', '--summary_steps', '5') == 0
  acc, _ = event_tags(d)
  assert [e.step for e in acc.Tensors('total_loss (raw)')] == [1, 5, 10]


@pytest.mark.slow
def test_nan_inside_a_loop_names_its_step_and_saves_nothing(
    shared_bin_dir, tmp_path, monkeypatch, capsys):
  d = str(tmp_path / 't')
  assert _run(shared_bin_dir, d, 2, 7, 'true') == 0
  # the update of step 14 (global step 13 before it) makes the weights NaN,
  # so the loss of step 15, inside the loop of steps 4-23, is NaN
  rate = convnet.learning_rate
  monkeypatch.setattr(convnet, 'learning_rate',
                      lambda step, batch, schedule: tf.where(
                          step >= 13, float('nan'),
                          rate(step, batch, schedule)))
  status = run_control.run_main(cifar10_train.main, train_args(
      shared_bin_dir, d) + ['--max_steps', '60', '--steps_per_loop', '20',
                            '--save_checkpoint_secs', '0.001'])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1, err
  # (ckpt-3 when the 1 ms between the loop's start and the first call's
  # save vote passed: a loaded machine may pause between them)
  m = re.search(r'error: loss is nan at step 15; stopped without saving, '
                r'the last good checkpoint is .*(ckpt-[23])$', err[0])
  assert m, err
  assert tf.train.latest_checkpoint(d).endswith(m.group(1))


_LONG_CALL = """
import sys, time
import tensorflow as tf
from cifar10_toolkit import run_control

@tf.function
def six_seconds():  # one call into the graph, busy for 6 s of the clock
  end = tf.timestamp() + 6.0
  x = tf.while_loop(lambda x: tf.timestamp() < end,
                    lambda x: tf.linalg.matmul(x, x) / 64.0,
                    [tf.ones([64, 64])])
  return x[0][0, 0]

six_seconds.get_concrete_function()
with run_control.GracefulStop(defer=True) as stop:
  print('calling', flush=True)
  six_seconds().numpy()
  print('%.3f: the call returned' % time.time(), flush=True)
  stop.say_caught()
sys.exit(stop.exit_status)
"""


@pytest.mark.slow
def test_a_stop_is_said_at_once_while_a_call_into_the_graph_runs(tmp_path):
  """Python's handler waits for the call to return; the line does not (the
  C-level handler wakes a thread), on a machine with every core busy."""
  busy = [subprocess.Popen([sys.executable, '-c', 'while True: pass'])
          for _ in range(os.cpu_count() or 2)]
  try:
    proc = start_script(['-c', _LONG_CALL])
    try:
      wait_for(proc, '^calling$')
      time.sleep(1)
      proc.send_signal(signal.SIGINT)
      sent = time.time()
      line = wait_for(proc, 'caught SIGINT')[-1]
      said = time.time()
      rest, _ = proc.communicate(timeout=60)
    finally:
      proc.kill()
  finally:
    for b in busy:
      b.kill()
  assert said - sent < 2, (said - sent, line)
  assert line.endswith(': caught SIGINT; saving a checkpoint before '
                       'exiting\n'), line
  returned = float(re.match(r'^([\d.]+): the call returned$', rest).group(1))
  assert returned > said + 1, (returned, said)  # the call was still running
  assert 'caught' not in rest and proc.returncode == 130, rest  # said once


def test_the_clock_is_read_only_on_the_steps_that_print_a_line():
  """The host's clock waits for the device: the graph loop reads it on the
  console's steps alone (no host wait on the others on a GPU)."""
  from cifar10_toolkit import train_loop
  strategy = tf.distribute.get_strategy()
  model = convnet.ConvNet(0)
  state = convnet.TrainState(model)
  feed = device_input.DeviceInput(None, 2, 0, CIFAR10, cifar10_input,
                                  strategy, tf.zeros([8, 3073], tf.uint8))
  loop, _ = train_loop.make_train_loop(strategy, convnet, model, state, 2,
                                       feed)
  votes = run_control.stop_votes(0, False)
  # steps 5..11 (from step 4) of a run logging every 3rd: lines at 6 and 9
  assert console.first_logged(4, 3) == 1
  losses, times, _ = loop(None, tf.constant(7), votes, tf.constant(1),
                          tf.constant(3))
  assert np.isfinite(losses.numpy()).all()
  assert list(np.isfinite(times.numpy())) == [
      False, True, False, False, True, False, False]
  stamped = times.numpy()[[1, 4]]
  assert stamped[0] <= stamped[1] and abs(stamped[1] - __import__(
      'time').time()) < 60
