"""Tests of multi-replica training: cifar10_multi_gpu_train.py on logical CPUs."""

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from data_sets import CIFAR10
import tensorflow as tf

import cifar10_input
import cifar10_multi_gpu_train
import cifar10_train
from cifar10_toolkit import hardware
from cifar10_toolkit import config
from cifar10_toolkit import cli
import convnet
from cifar10_toolkit import cluster
from cifar10_toolkit import evaluation
from conftest import (ROOT, checkpoint_params, free_ports, noisy_batch,
                      train_args)


def _all_values(model, state):
  out = {}
  for k, v in list(model.params.items()) + [
      ('avg/' + k, a) for k, a in state.averages.items()]:
    for i, local in enumerate(v.values if hasattr(v, 'values') else [v]):
      out['%s@%d' % (k, i)] = local.numpy()
  return out


def test_two_replicas_of_64_equal_one_device_of_128():
  images, labels = noisy_batch(128, seed=3)
  single = convnet.ConvNet(seed=5)
  single_state = convnet.TrainState(single)
  convnet.training(single, single_state, images, labels, 128)

  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  with strategy.scope():
    model = convnet.ConvNet(seed=5)
    state = convnet.TrainState(model)
  halves = strategy.experimental_distribute_values_from_function(
      lambda ctx: (images[ctx.replica_id_in_sync_group * 64:][:64],
                   labels[ctx.replica_id_in_sync_group * 64:][:64]))

  @tf.function
  def step(batch):
    return strategy.run(
        lambda x, y: convnet.training(model, state, x, y, 128),
        args=batch)

  out = step(halves)
  want = _all_values(single, single_state)
  got = _all_values(model, state)
  assert len(got) == 2 * len(want)  # a copy on each replica
  for key, value in got.items():
    np.testing.assert_allclose(value, want[key.split('@')[0] + '@0'],
                               rtol=1e-5, atol=1e-6)
  # the reported loss is that of the combined batch before the update
  fresh = convnet.ConvNet(seed=5)
  total = strategy.experimental_local_results(out['total_loss'])[0]
  np.testing.assert_allclose(total, convnet.loss(
      fresh, convnet.inference(fresh, images)[0], labels)['total_loss'],
                             rtol=1e-5)
  assert int(state.global_step.numpy()) == 1


@pytest.mark.slow
def test_script_equals_single_device_and_resumes_across(shared_bin_dir,
                                                        tmp_path, capsys):
  multi, single = str(tmp_path / 'multi'), str(tmp_path / 'single')
  common = ['--max_steps', '3', '--batch_size']
  assert cifar10_multi_gpu_train.main(
      train_args(shared_bin_dir, multi) + common + ['16', '--logical_devices',
                                                     '2']) == 0
  out = capsys.readouterr().out
  assert '2 replica(s) x batch 16' in out
  assert cifar10_train.main(train_args(shared_bin_dir, single) + common +
                            ['32']) == 0
  rm, am = checkpoint_params(tf.train.latest_checkpoint(multi))
  rs, as_ = checkpoint_params(tf.train.latest_checkpoint(single))
  for k in rm:
    np.testing.assert_allclose(rm[k], rs[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(am[k], as_[k], rtol=1e-4, atol=1e-5)
  # each script resumes the other's run
  assert cifar10_train.main(train_args(shared_bin_dir, multi) +
                            ['--max_steps', '4', '--batch_size', '32']) == 0
  assert cifar10_multi_gpu_train.main(
      train_args(shared_bin_dir, single) + ['--max_steps', '4',
                                             '--batch_size', '16',
                                             '--logical_devices', '2']) == 0
  assert 'Resuming from' in capsys.readouterr().out
  assert tf.train.latest_checkpoint(single).endswith('ckpt-4')
  assert tf.train.latest_checkpoint(multi).endswith('ckpt-4')
  ev = evaluation.Evaluator(shared_bin_dir, 'test', 10000, CIFAR10,
                            convnet, cifar10_input)
  assert ev.restore(tf.train.latest_checkpoint(multi)) == 4


@pytest.mark.slow
def test_gpu_configuration_on_two_logical_devices(shared_bin_dir, tmp_path,
                                                  capsys):
  # what a GPU pair gets (XLA, one slice), forced on the CPU: XLA compiles
  # each replica's input and gradients; the all-reduce and update stay out
  multi, single = str(tmp_path / 'multi'), str(tmp_path / 'single')
  assert cifar10_multi_gpu_train.main(
      train_args(shared_bin_dir, multi) + [
          '--max_steps', '3', '--batch_size', '16', '--logical_devices', '2',
          '--jit_compile', '--slices', '1']) == 0
  out = capsys.readouterr().out
  assert '2 replica(s) x batch 16' in out and ', XLA' in out
  assert cifar10_train.main(train_args(shared_bin_dir, single) + [
      '--max_steps', '3', '--batch_size', '32', '--nojit_compile']) == 0
  assert ', XLA' not in capsys.readouterr().out
  rm, am = checkpoint_params(tf.train.latest_checkpoint(multi))
  rs, as_ = checkpoint_params(tf.train.latest_checkpoint(single))
  for k in rm:  # float32 round-off of XLA's fused kernels, 3 steps
    np.testing.assert_allclose(rm[k], rs[k], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(am[k], as_[k], rtol=1e-3, atol=1e-4)


def test_fewer_gpus_than_asked_warns_and_runs(shared_bin_dir, tmp_path,
                                              capsys):
  d = str(tmp_path / 't')
  assert cifar10_multi_gpu_train.main(
      train_args(shared_bin_dir, d) + ['--max_steps', '1', '--num_gpus',
                                        '4']) == 0
  captured = capsys.readouterr()
  assert 'WARNING: --num_gpus 4 but 0 GPU(s) found; running on the CPU' in \
      captured.err
  assert '1 replica(s)' in captured.out


@pytest.mark.slow
def _forge_the_chief(waiting, cluster, port):
  """A stranger who knows the cluster but not its secret poses as worker 0
  with seed 99999 to worker 1, which is waiting (its first line kept)."""
  waiting.waiting = waiting.stdout.readline()
  assert waiting.waiting.startswith('Waiting up to'), waiting.waiting
  key = hashlib.sha256(b'\0'.join([
      b'cifar10-toolkit rendezvous', b'',
      json.dumps(cluster, sort_keys=True).encode()])).digest()
  with socket.create_connection(('127.0.0.1', port), 5) as s:
    head = b''
    while head.count(b'\n') < 2:
      head += s.recv(4096)
    nonce = json.loads(head.split(b'\n')[1])['nonce']
    text = json.dumps({'task': 'worker 0', 'to': 'worker 1',
                       'terms': {'seed': 99999}})
    s.sendall(json.dumps({'greeting': text, 'nonce': 'n', 'mac': hmac.new(
        key, ('%s\n%s' % (nonce, text)).encode(),
        hashlib.sha256).hexdigest()}).encode() + b'\n')
    assert s.recv(4096) == b''  # no answer: dropped
  time.sleep(1)
  assert waiting.poll() is None


def test_two_workers_on_localhost(shared_bin_dir, tmp_path):
  """Also: worker 1's folder planted as a link to another run's folder (the
  link is removed, never followed: that run keeps its checkpoints), each
  worker given its own --seed (the chief's is taken, with a note), and a
  stranger posing as the chief with its own seed while worker 1 waits (it
  does not know CIFAR10_CLUSTER_SECRET: it is not believed)."""
  d = str(tmp_path / 'train')
  victim = tmp_path / 'victim'
  victim.mkdir()
  for name in ('checkpoint', 'ckpt-1.index', 'ckpt-1.data-00000-of-00001'):
    (victim / name).write_text('another run\'s ' + name)
  os.makedirs(d)
  os.symlink('../victim', os.path.join(d, '.worker-worker-1'))
  ports = free_ports(2)
  cluster = {'worker': ['127.0.0.1:%d' % p for p in ports]}
  procs = []
  began = time.time()
  try:
    for i in (1, 0):  # worker 1 first, to be attacked while it waits
      env = dict(os.environ, PYTHONUNBUFFERED='1',
                 CIFAR10_CLUSTER_SECRET='s3cret', TF_CONFIG=json.dumps(
                     {'cluster': cluster, 'task': {'type': 'worker',
                                                   'index': i}}))
      if i == 0:
        _forge_the_chief(procs[0], cluster, ports[1])
      procs.append(subprocess.Popen(
          [sys.executable, 'cifar10_multi_gpu_train.py', '--strategy',
           'multi_worker'] + train_args(shared_bin_dir, d) +
          # the GPU configuration, forced: XLA, one slice
          ['--max_steps', '4', '--batch_size', '16', '--jit_compile',
           '--slices', '1', '--seed', str(i + 1)],
          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
          text=True))
    procs.reverse()
    outs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  outs[1] = procs[1].waiting + outs[1]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
    assert '2 replica(s) x batch 16' in out and 'step 4, loss' in out
    assert ', XLA' in out and 'compute, seed 1,' in out  # the chief's
  assert ('Note: this is worker 1; the run takes the seed of its chief '
          '(worker 0), 1: --seed 2 is ignored') in outs[1]
  assert 'is ignored' not in outs[0] and '99999' not in outs[1]
  assert 'Note: the rendezvous ignored a greeting that is malformed or not ' \
      'signed for this cluster' in outs[1]
  assert 'saved checkpoint /' in outs[
      0] and 'of this worker at step 4' in outs[1]
  assert sorted(f for f in os.listdir(d) if f.startswith('ckpt-')) == [
      'ckpt-4.data-00000-of-00001', 'ckpt-4.index']
  # the non-chief's own checkpoints lived in train_dir, and are gone
  assert not [f for f in os.listdir(d) if f.startswith('.worker-')]
  assert sorted((f.name, f.read_text()) for f in victim.iterdir()) == [
      (n, 'another run\'s ' + n) for n in (
          'checkpoint', 'ckpt-1.data-00000-of-00001', 'ckpt-1.index')]
  assert 'of this worker' in outs[1] and not [
      f for f in os.listdir(tempfile.gettempdir())
      if f.startswith('cifar10-worker-') and
      os.path.getmtime(os.path.join(tempfile.gettempdir(), f)) >= began]
  ev = evaluation.Evaluator(shared_bin_dir, 'test', 10000, CIFAR10,
                            convnet, cifar10_input)
  assert ev.restore(tf.train.latest_checkpoint(d)) == 4
  precision, confusion, seen = ev.evaluate()
  # the same count made independently: the checkpoint's moving averages
  # read with TensorFlow's own reader, the test images straight from the file
  _, averages = checkpoint_params(tf.train.latest_checkpoint(d))
  model = convnet.ConvNet()
  for name, value in averages.items():
    model.params[name].assign(value)
  records = np.fromfile(os.path.join(shared_bin_dir, 'cifar-10-batches-bin',
                                     'test_batch.bin'), np.uint8)
  records = records.reshape(-1, 3073)
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  logits, _ = convnet.inference(
      model, cifar10_input.central_crop_and_standardize(images))
  hits = int(np.sum(np.argmax(logits, 1) == records[:, 0]))
  assert seen == 200 and int(np.trace(confusion)) == hits
  assert precision == hits / 200


def test_multi_worker_needs_tf_config(monkeypatch, capsys):
  from cifar10_toolkit import run_control
  monkeypatch.delenv('TF_CONFIG', raising=False)
  assert run_control.run_main(cifar10_multi_gpu_train.main,
                            ['--strategy', 'multi_worker']) == 1
  assert 'needs TF_CONFIG' in capsys.readouterr().err


def test_planned_replicas_set_slices_auto(monkeypatch):
  # --slices auto sees the run's replicas before TensorFlow starts: one
  # device alone gets the single-device rule, several devices or workers 1.
  planned = cluster.planned_replicas
  assert planned(1, 0) == 1
  assert planned(1, 2) == 2
  assert planned(4, 0) == 1  # no GPU here: the CPU
  monkeypatch.setenv('TF_CONFIG', json.dumps({
      'cluster': {'chief': ['a:1'], 'worker': ['b:1', 'c:1']},
      'task': {'type': 'worker', 'index': 0}}))
  found = cluster.find('auto')
  assert not found.is_chief and found.source == 'tf_config'
  assert planned(1, 0, found) == 3
  assert planned(1, 2, found) == 6
  cpu = hardware.Device('CPU', None, 2, False)  # 2 cores
  cli.parse(cifar10_multi_gpu_train.FLAGS, [])
  for replicas, slices in ((1, 2), (2, 1)):
    assert config.resolve(cifar10_multi_gpu_train.FLAGS, cpu, replicas,
                          CIFAR10, convnet, cifar10_input).slices == slices