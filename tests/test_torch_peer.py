"""The PyTorch peers, run where an interpreter with torch is given
($CIFAR10_TORCH_PYTHON, or this one if it has torch); skipped elsewhere (CI
installs no torch): the convnet peer's LRN (a band-matrix matmul) against
TensorFlow's own, values and gradients; ResNet-20's accuracy peer resuming
to the weights of an unbroken run."""

import os
import re
import signal
import subprocess
import threading

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, write_bin

PEER = os.path.join(ROOT, 'benchmarks', 'torch_peer.py')
ACCURACY = os.path.join(ROOT, 'benchmarks', 'torch_resnet_accuracy.py')


def _torch_python():
  import sys
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
  import turns
  path, why_not = turns.torch_python(None)
  if path is None:
    pytest.skip(why_not)
  return path


def test_the_peers_lrn_matches_tensorflows(tmp_path):
  python = _torch_python()
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((8, 12, 12, 64)) * 3).astype(np.float32)
  dy = rng.standard_normal(x.shape).astype(np.float32)
  xt = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(xt)
    y = tf.nn.local_response_normalization(xt, depth_radius=4, bias=1.0,
                                           alpha=0.001 / 9.0, beta=0.75)
  dx = tape.gradient(y, xt, output_gradients=tf.constant(dy))
  np.savez(tmp_path / 'in.npz', x=x, dy=dy)
  subprocess.run([python, PEER, '--check_lrn', str(tmp_path / 'in.npz'),
                  str(tmp_path / 'out.npz')], check=True, timeout=300)
  got = np.load(tmp_path / 'out.npz')
  np.testing.assert_allclose(got['y'], y.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got['dx'], dx.numpy(), rtol=1e-4, atol=1e-5)
  # a band of 4 channels each side, not a neighbourhood of another width:
  # the same check against depth_radius 3 fails
  y3 = tf.nn.local_response_normalization(xt, depth_radius=3, bias=1.0,
                                          alpha=0.001 / 9.0, beta=0.75)
  assert np.abs(got['y'] - y3.numpy()).max() > 1e-3


def test_the_resnet_accuracy_peer_resumes_to_an_unbroken_runs_weights(
    tmp_path):
  python = _torch_python()
  write_bin(str(tmp_path), per_file=60, test_num=50)

  def command(train_dir, steps, *extra):
    return [python, ACCURACY, '--data_dir', str(tmp_path), '--train_dir',
            str(tmp_path / train_dir), '--max_steps', str(steps), '--subset',
            '20', '--no_compile'] + list(extra)

  def run(train_dir, steps, *extra, check=True):
    return subprocess.run(
        command(train_dir, steps, '--eval_steps', '4', *extra), check=check,
        timeout=300, capture_output=True, text=True)
  # batches span epochs (300 examples, 128 a batch)
  unbroken = run('unbroken', 6).stdout
  assert 'step 4: precision @ 1 = ' in unbroken
  assert 'on the 50 test images' in unbroken and 'on the first 20' in unbroken
  run('broken', 4)
  resumed = run('broken', 6).stdout
  assert 'resumed at step 4 ' in resumed and 'step 4:' not in resumed
  differ = subprocess.run([python, '-c', """if 1:
      import sys, torch
      a, b = (torch.load(p)['model'] for p in sys.argv[1:])
      assert a.keys() == b.keys()
      print(max((a[k].double() - b[k].double()).abs().max().item()
                for k in a))""", str(tmp_path / 'unbroken' / 'checkpoint.pt'),
      str(tmp_path / 'broken' / 'checkpoint.pt')], check=True, timeout=120,
      capture_output=True, text=True).stdout
  assert float(differ) < 1e-5, differ
  # another recipe's checkpoint: one line, and the checkpoint kept
  before = (tmp_path / 'broken' / 'checkpoint.pt').read_bytes()
  refused = run('broken', 8, '--per_image', check=False)
  assert refused.returncode == 2 and refused.stdout == ''
  assert ("checkpoint.pt was trained with {'seed': 1, 'per_image': False}, "
          "not {'seed': 1, 'per_image': True}") in refused.stderr
  assert (tmp_path / 'broken' / 'checkpoint.pt').read_bytes() == before
  # SIGTERM: saved where it stood, status 143, and the same command resumes
  proc = subprocess.Popen(command('broken', 100000), stdout=subprocess.PIPE,
                          text=True)
  deadline = threading.Timer(300, proc.kill)  # (bounds the reads below)
  deadline.start()
  try:
    assert proc.stdout.readline().startswith('resumed at step 6 ')
    assert proc.stdout.readline().startswith('step 100, loss = ')
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
  finally:
    deadline.cancel()
    proc.kill()
  assert proc.returncode == 128 + signal.SIGTERM, out
  stopped = int(re.search(r'^stopped at step (\d+) by signal 15; saved to '
                          r'.*checkpoint\.pt', out, re.M).group(1))
  assert stopped >= 100
  assert 'resumed at step %d ' % stopped in run('broken', stopped + 1).stdout
