"""The GPU path, proven on a CPU: the kernel registry audit (gpu_audit.py),
XLA against the plain step, the GPU defaults from made-up devices, memory
growth."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cifar10_input
from cifar10_toolkit import device_input
import cifar10_train
from cifar10_toolkit import train_loop
import convnet
from tools import gpu_audit
from tools import kernel_audit
from cifar10_toolkit import hardware
from cifar10_toolkit import config
from cifar10_toolkit import cli
from cifar10_toolkit import run_control
from data_sets import CIFAR10
from conftest import ROOT
from conftest import tutorial_convnet_only

# a costly module fixture: its tests run in one process (--dist loadgroup)
pytestmark = pytest.mark.xdist_group('gpu_audit')

# The launches a step of the GPU configuration may make (the bound).
MAX_GPU_OPS_PER_STEP = 10


@pytest.fixture(scope='module')
def audit_results():
  """gpu_audit.py --json for 1 and 2 replicas, side by side (2 processes)."""
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'tools.gpu_audit', '--json',
       '--replicas', str(r)] + ([] if r == 1 else ['--noserving']),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
           for r in (1, 2)]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=600)
    assert p.returncode in (0, 1), err[-2000:]
    results += json.loads(out)
  return results


@pytest.mark.slow
def test_every_op_of_every_configuration_has_a_gpu_kernel(audit_results):
  configs = [r['config'] for r in audit_results]
  assert len(configs) == len(gpu_audit.configurations()) + 1
  assert 'evaluation and serving' in configs
  for r in audit_results:
    assert r['offenders'] == [], r['config']
    for op, dtypes, scope in r['host']:  # host-side only by design
      assert op in kernel_audit.HOST_BY_DESIGN or 'string' in dtypes, (op,
                                                                       scope)
  # the summaries and the console's clock are there, and seen as host-side
  host_ops = {h[0] for r in audit_results for h in r['host']}
  assert {'WriteSummary', 'EncodePng', 'Timestamp'} <= host_ops


@pytest.mark.slow
def test_gpu_configuration_launches_at_most_ten_ops_per_step(audit_results):
  for r in audit_results:
    c = r['config']
    if isinstance(c, dict) and c['replicas'] == 1 and c['jit']:
      # the step and its input are one XLA launch; around it the loop's
      # counter, the loss and the time written out, the clock read
      assert r['ops_per_step'] <= MAX_GPU_OPS_PER_STEP, c
    elif isinstance(c, dict) and not c['jit']:
      assert r['ops_per_step'] > 100, c  # the count sees a real step


def test_audit_finds_an_op_without_a_gpu_kernel():
  records = tf.zeros([10, 7], tf.uint8)

  @tf.function
  def gather_bytes(i):
    return tf.gather(records, i), tf.timestamp()

  @tf.function
  def gather_words(i):
    return tf.gather(tf.cast(records, tf.int32), i)

  fn = gather_bytes.get_concrete_function(tf.TensorSpec([None], tf.int32))
  offenders, host = kernel_audit.audit([fn])
  assert [o[:2] for o in offenders] == [('GatherV2', 'int32,uint8')]
  assert [h[0] for h in host] == ['Timestamp']
  fn = gather_words.get_concrete_function(tf.TensorSpec([None], tf.int32))
  assert kernel_audit.audit([fn]) == ([], [])


def test_ops_per_step_counts_a_loop_body():
  v = tf.Variable(1.0)

  @tf.function(jit_compile=True)
  def compiled(x):
    return tf.reduce_sum(tf.sin(x) * 3.0 + v)

  @tf.function
  def loop(n, xla):
    total = tf.constant(0.0)
    for _ in tf.range(n):
      if xla:
        total += compiled(tf.ones([4]))
      else:
        total += tf.reduce_sum(tf.sin(tf.ones([4])) * 3.0 + v)
    return total

  with_xla = kernel_audit.ops_per_step(loop.get_concrete_function(
      tf.TensorSpec([], tf.int32), True))
  without = kernel_audit.ops_per_step(loop.get_concrete_function(
      tf.TensorSpec([], tf.int32), False))
  # the loop's own: the counter and the index (2 AddV2) and the sum; XLA 1
  assert with_xla == 4
  # sin, mul, read, add, sum instead of the one launch
  assert without == with_xla - 1 + 5


@pytest.mark.parametrize('device,want', [
    (hardware.Device('GPU', (9, 0), 16, True), ('bfloat16', True, 1)),
    (hardware.Device('GPU', (8, 0), 16, True), ('bfloat16', True, 1)),
    (hardware.Device('GPU', (7, 5), 16, False), ('float16', True, 1)),
    (hardware.Device('GPU', (7, 0), 16, False), ('float16', True, 1)),
    (hardware.Device('GPU', (6, 1), 16, False), ('float32', True, 1)),
    (hardware.Device('CPU', None, 2, True), ('bfloat16', False, 2)),
    (hardware.Device('CPU', None, 2, False), ('float32', False, 2)),
    (hardware.Device('CPU', None, 1, False), ('float32', False, 1)),
])
def test_defaults_from_a_device_description(device, want):
  assert (hardware.auto_precision(device), hardware.auto_jit_compile(device),
          hardware.auto_slices(device, 128, 1, 32)) == want
  assert hardware.auto_slices(device, 128, 2, 32) == 1
  assert hardware.auto_data_on_device(device)
  # and through the flags, as the scripts resolve them
  def resolve(*argv):
    cli.parse(cifar10_train.FLAGS, list(argv))
    return config.resolve(cifar10_train.FLAGS, device, 1, CIFAR10, convnet,
                          cifar10_input)
  run = resolve()
  assert (run.precision, run.jit_compile, run.slices) == want
  assert run.data_on_device
  assert not resolve('--nojit_compile').jit_compile
  assert resolve('--jit_compile=true').jit_compile
  assert resolve('--jit_compile').jit_compile
  assert not resolve('--nodata_on_device').data_on_device


def test_this_machine_is_described():
  device = hardware.describe()
  assert device.kind == 'CPU' and device.cores == hardware.usable_cores()
  assert device.native_bf16 == hardware.native_bf16_cpu()


def test_memory_growth_is_set_before_a_script_runs(monkeypatch):
  calls = []
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: ['gpu0', 'gpu1'] if kind == 'GPU'
                      else [])
  monkeypatch.setattr(tf.config.experimental, 'set_memory_growth',
                      lambda device, on: calls.append((device, on)))

  def main(argv):
    calls.append('main')
    return 0
  assert run_control.run_main(main) == 0
  assert calls == [('gpu0', True), ('gpu1', True), 'main']


def _one_step_each_way(data_dir, seed=4, steps=21):
  """Losses of `steps` steps and the first step's outputs, with and without
  XLA, from the same initial weights (data on the device, one replica)."""
  results = []
  for jit in (False, True):
    model = convnet.ConvNet(seed)
    state = convnet.TrainState(model, seed, tf.float32)
    feed = device_input.DeviceInput(data_dir, 32, seed, CIFAR10,
                                    cifar10_input)
    _, summary_step = train_loop.make_train_loop(
        tf.distribute.get_strategy(), convnet, model, state, 32, feed, jit)
    flags = run_control.stop_votes(0, False)
    # (the step with summaries, called again and again: one compilation)
    outs = [summary_step(None, flags)[0] for _ in range(steps)]
    results.append((tf.nest.map_structure(np.asarray, outs[0]),
                    np.array([float(o['total_loss']) for o in outs]),
                    int(state.global_step.numpy())))
  return results


@pytest.mark.slow
@tutorial_convnet_only
def test_xla_step_equals_the_plain_step(shared_bin_dir):
  (plain, plain_losses, plain_step), (xla, xla_losses, xla_step) = (
      _one_step_each_way(shared_bin_dir))
  assert plain_step == xla_step == 21
  # one step: the same batch (the same examples, crops and flips), loss and
  # gradients to float32 round-off
  np.testing.assert_allclose(xla['total_loss'], plain['total_loss'],
                             rtol=1e-5)
  np.testing.assert_allclose(xla['images'], plain['images'], atol=1e-4)
  for name, g in plain['gradients'].items():
    np.testing.assert_allclose(xla['gradients'][name], g, rtol=2e-3,
                               atol=2e-5, err_msg=name)
  # 21 steps of SGD 0.1: round-off grows, bounded here by 1% of the loss
  np.testing.assert_allclose(xla_losses, plain_losses, rtol=1e-2)
  assert abs(xla_losses[-1] - plain_losses[-1]) < 0.01 * plain_losses[-1]


@pytest.mark.slow
def test_in_replica_batches_equal_tf_data_batches_with_and_without_xla(
    shared_bin_dir):
  # one replica makes its own batch from the step (the GPU configuration):
  # bit-identical to tf.data without XLA; with XLA the same examples, crops
  # and flips, the pixels to float32 round-off
  seed, start = 7, 8
  feed = device_input.DeviceInput(shared_bin_dir, 96, seed, CIFAR10,
                                  cifar10_input)
  dataset = iter(cifar10_input.distorted_inputs(shared_bin_dir, 96, seed,
                                                start))

  def batch(step):  # as one replica makes it, inside its step
    _, indices, step = feed.next_batch(step)
    return feed.replica_batch((feed.records, indices, step))
  plain = tf.function(batch)
  xla = tf.function(batch, jit_compile=True)
  for step in range(start, start + 4):  # step 10 straddles two epochs
    want = next(dataset)
    got = plain(tf.constant(step, tf.int64))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    got = xla(tf.constant(step, tf.int64))
    np.testing.assert_allclose(got[0], want[0], atol=1e-4)
    np.testing.assert_array_equal(got[1], want[1])


def test_uniform_is_the_kernels_stateless_uniform():
  seed = tf.constant([5, 11], tf.int64)
  np.testing.assert_array_equal(
      cifar10_input.uniform([1000], seed, -63.0, 63.0),
      tf.random.stateless_uniform([1000], seed, -63.0, 63.0))
  xla = tf.function(cifar10_input.uniform, jit_compile=True)
  np.testing.assert_array_equal(xla([1000], seed),
                                tf.random.stateless_uniform([1000], seed))


def test_records_as_words_round_trip():
  rng = np.random.default_rng(0)
  records = rng.integers(0, 256, (5, CIFAR10.record_bytes), np.uint8)
  words = device_input.to_words(tf.constant(records), CIFAR10.record_bytes)
  assert words.dtype == tf.int32 and words.shape == [5, 769]
  np.testing.assert_array_equal(device_input.from_words(words, CIFAR10.record_bytes), records)
