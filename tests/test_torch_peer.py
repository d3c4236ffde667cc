"""The PyTorch peer's LRN (a band-matrix matmul) against TensorFlow's own,
values and gradients, run where an interpreter with torch is given
($CIFAR10_TORCH_PYTHON, or this one if it has torch); skipped elsewhere (CI
installs no torch)."""

import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT

PEER = os.path.join(ROOT, 'benchmarks', 'torch_peer.py')


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
