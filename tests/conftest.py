"""Shared fixtures: tiny CIFAR-10 data sets written in the exact official formats."""

import glob
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tests send stop signals to the scripts they start, which keep a signal
# ignored when they started ignored (nohup's SIGHUP; a shell's background
# job ignores SIGINT, as a CI runner may have started this): the children
# must not inherit an ignored one. (A handled signal is reset to the default
# in a child; an ignored one stays ignored.)
def live_stop_signals():
  for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(s) == signal.SIG_IGN:
      signal.signal(s, signal.default_int_handler if s == signal.SIGINT
                    else signal.SIG_DFL)


live_stop_signals()
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# TensorFlow's benign start-up lines kept out of the suite's output, as the
# scripts keep them out of theirs (pytest -n's workers would print them)
from cifar10_toolkit import startup  # noqa: E402
startup.hide_startup_noise()
startup.defer_keras()  # as the scripts load TensorFlow

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that the tests run real two-replica training;
# this must happen before TensorFlow initialises its devices.
LOGICAL_CPUS = 2
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS)
startup.end_startup()

# Where the tests find the real data set (cifar-10-binary.tar.gz), first found
# first: the archive that $CIFAR10_DATA_SOURCE names, as the README sets it up
# (a local path; a URL is not fetched by tests), then a copy in a cifar10/
# folder of any folder beside the clone (where a machine without internet
# keeps its data).
ARCHIVE = 'cifar-10-binary.tar.gz'


def real_archive():
  """The path of the real data set's archive, or None where there is none."""
  beside = sorted(glob.glob(os.path.join(os.path.dirname(ROOT), '*',
                                         'cifar10', ARCHIVE)))
  for path in [os.environ.get('CIFAR10_DATA_SOURCE')] + beside:
    if path and '://' not in path and os.path.isfile(os.path.expanduser(path)):
      return os.path.expanduser(path)
  return None


from data_sets import CIFAR10  # noqa: E402
RECORDS_PER_FILE = CIFAR10.file_records(CIFAR10.test_files[0])
FILE_BYTES = RECORDS_PER_FILE * CIFAR10.record_bytes

CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
           'horse', 'ship', 'truck']


# The tutorial's network (docs/model.md): name, weights' shape, stddev,
# weight decay, bias. A fork that changes convnet.py's network skips what
# pins the tutorial's weights bit for bit (NOT_THE_TUTORIALS), and
# test_convnet.test_parameter_count fails until its count is the fork's.
TUTORIAL_NETWORK = ('conv1', 'pool1', 'norm1', 'conv2', 'norm2', 'pool2',
                    'local3', 'local4', 'softmax_linear')
TUTORIAL_LAYERS = [
    ('conv1', [5, 5, 3, 64], 5e-2, 0.0, 0.0),
    ('conv2', [5, 5, 64, 64], 5e-2, 0.0, 0.1),
    ('local3', [6 * 6 * 64, 384], 0.04, 0.004, 0.1),
    ('local4', [384, 192], 0.04, 0.004, 0.1),
    ('softmax_linear', [192, 10], 1 / 192.0, 0.0, 0.0)]


def is_tutorial_convnet():
  """Whether convnet.py still defines the tutorial's network."""
  import convnet
  return convnet.NETWORK == TUTORIAL_NETWORK and [
      (k,) + v for k, v in convnet.LAYERS.items()] == TUTORIAL_LAYERS


NOT_THE_TUTORIALS = ("convnet.py's network is no longer the tutorial's "
                     '(convnet.NETWORK or layers() changed): this pins the '
                     "tutorial's weights")
# Tests whose bounds were measured on the tutorial's network (how far its
# loss falls on noise, XLA's round-off in its gradients): a fork re-measures
# them for its own network before it drops this mark.
tutorial_convnet_only = pytest.mark.skipif(
    not is_tutorial_convnet(), reason="convnet.py's network is no longer the "
    "tutorial's: this test's bounds were measured on the tutorial's")

def make_arrays(num, seed):
  """num random images (uint8 [num, 3072], plane order) and labels 0-9."""
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (num, 3072), dtype=np.uint8),
          (np.arange(num) % 10).astype(np.uint8)[rng.permutation(num)])


def write_bin(folder, per_file=100, test_num=None, seed=0):
  """Writes cifar-10-batches-bin/ under folder; returns {name: (data, labels)}."""
  out = os.path.join(folder, 'cifar-10-batches-bin')
  os.makedirs(out, exist_ok=True)
  files = {}
  names = ['data_batch_%d.bin' % i for i in range(1, 6)] + ['test_batch.bin']
  for i, name in enumerate(names):
    n = (test_num or per_file) if name == 'test_batch.bin' else per_file
    data, labels = make_arrays(n, seed * 100 + i)
    np.concatenate([labels[:, None], data], axis=1).tofile(
        os.path.join(out, name))
    files[name] = (data, labels)
  with open(os.path.join(out, 'batches.meta.txt'), 'w') as f:
    f.write('\n'.join(CLASSES) + '\n\n')
  return files


def write_py(folder, per_file=100, seed=0):
  """Writes cifar-10-batches-py/ as Python 2 would (bytes keys, protocol 2)."""
  out = os.path.join(folder, 'cifar-10-batches-py')
  os.makedirs(out, exist_ok=True)
  files = {}
  names = ['data_batch_%d' % i for i in range(1, 6)] + ['test_batch']
  for i, name in enumerate(names):
    data, labels = make_arrays(per_file, seed * 100 + i)
    d = {
        b'batch_label': b'batch',
        b'labels': [int(x) for x in labels],
        b'data': data,
        b'filenames': [b'f%d.png' % j for j in range(per_file)]
    }
    with open(os.path.join(out, name), 'wb') as f:
      pickle.dump(d, f, protocol=2)
    files[name] = (data, labels)
  with open(os.path.join(out, 'batches.meta'), 'wb') as f:
    pickle.dump({b'label_names': [c.encode() for c in CLASSES],
                 b'num_cases_per_batch': per_file, b'num_vis': 3072}, f,
                protocol=2)
  return files


@pytest.fixture
def bin_dir(tmp_path):
  """A data_dir holding a tiny binary data set (5 x 100 train, 100 test)."""
  write_bin(str(tmp_path))
  return str(tmp_path)


@pytest.fixture(scope='session')
def shared_bin_dir(tmp_path_factory):
  """A session-wide tiny binary data set (5 x 200 train, 200 test)."""
  d = str(tmp_path_factory.mktemp('cifar_small'))
  write_bin(d, per_file=200)
  return d


@pytest.fixture(scope='session')
def real_data_dir(tmp_path_factory):
  """The real data set (real_archive()), extracted once; skips if absent."""
  archive = real_archive()
  if archive is None:
    pytest.skip('real data set not found: set CIFAR10_DATA_SOURCE to the '
                'path of cifar-10-binary.tar.gz')
  from cifar10_toolkit import dataset
  d = str(tmp_path_factory.mktemp('cifar_real'))
  dataset.maybe_download_and_extract(d, archive, CIFAR10)
  return d


# --- helpers shared by the test modules -----------------------------------

def noisy_batch(n=32, seed=0):
  """Noise images with a class-dependent brightness in one channel."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n)
  images = rng.normal(size=(n, 24, 24, 3))
  for i, label in enumerate(labels):
    images[i, :, :, label % 3] += (label - 4.5) / 3
  return tf.constant(images, tf.float32), tf.constant(labels, tf.int32)


def train_args(data_dir, train_dir, *extra):
  """The flags of a short, quiet, float32 convnet run on small data."""
  return ['--data_dir', data_dir, '--train_dir', train_dir, '--batch_size',
          '32', '--seed', '3', '--log_frequency', '1', '--use_bf16=False'
          ] + list(extra)


def checkpoint_params(path):
  """name -> raw weights and name -> moving averages stored in a checkpoint
  (names as in model.params: 'conv1/weights'; a checkpoint's keys write the
  dict key's '/' as '.S')."""
  reader = tf.train.load_checkpoint(path)
  raw, avg = {}, {}
  for key in reader.get_variable_to_shape_map():
    for prefix, out in (('model/params/', raw), ('state/averages/', avg)):
      if key.startswith(prefix) and key.endswith('VARIABLE_VALUE'):
        out[key.split('/')[2].replace('.S', '/')] = reader.get_tensor(key)
  return raw, avg


def start_script(args):
  """A script run as a subprocess, its output unbuffered, read line by line."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  return subprocess.Popen([sys.executable] + args, cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def wait_for(proc, pattern, timeout=120):
  """The output lines up to the first matching pattern (else kill, fail).
  Bounded even when the process goes silent: it is killed at the deadline,
  which ends the read."""
  watchdog = threading.Timer(timeout, proc.kill)
  watchdog.start()
  lines = []
  try:
    while True:
      line = proc.stdout.readline()
      if not line:
        break
      lines.append(line)
      if re.search(pattern, line):
        return lines
  finally:
    watchdog.cancel()
  proc.kill()
  raise AssertionError('no %r in output:\n%s' % (pattern, ''.join(lines)))


def free_ports(n):
  """n TCP ports free on 127.0.0.1 just now."""
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def start_workers(data, d, steps, ports, *extra, per_worker=((), ())):
  """Two worker processes on 127.0.0.1 (stderr into stdout); extra flags
  for both, then per_worker[i] for worker i."""
  cluster = {'worker': ['127.0.0.1:%d' % p for p in ports]}
  procs = []
  for i in range(2):
    env = dict(os.environ, PYTHONUNBUFFERED='1', TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': i}}))
    procs.append(subprocess.Popen(
        [sys.executable, 'cifar10_multi_gpu_train.py', '--strategy',
         'multi_worker'] + train_args(data, d) + [
             '--max_steps', str(steps), '--batch_size', '16',
             '--steps_per_loop', '5', '--log_frequency', '5'] + list(extra)
        + list(per_worker[i]),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True))
  return procs


def event_tags(logdir):
  """(an EventAccumulator of logdir, its tensor tags)."""
  acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0})
  acc.Reload()
  return acc, set(acc.Tags()['tensors'])


@pytest.fixture(scope='session')
def trained(shared_bin_dir, tmp_path_factory):
  """A train_dir holding a 4-step convnet run (a checkpoint at each step)."""
  d = str(tmp_path_factory.mktemp('tb_train'))
  assert __import__("cifar10_train").main(train_args(shared_bin_dir, d) + [
      '--max_steps', '4', '--save_checkpoint_secs', '0.000001']) == 0
  return d


@pytest.fixture(autouse=True)
def _stop_signals_live_after_each_test():
  """A script's main() run in this process may leave a stop signal ignored
  (cifar10_export.py ignores Ctrl-C once its export is complete): the
  next test's children must not inherit that."""
  yield
  live_stop_signals()
