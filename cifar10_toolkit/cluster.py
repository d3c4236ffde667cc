"""Several replicas: devices split on one machine, or a cluster of workers
(the plumbing of cifar10_multi_gpu_train.py).

  mirrored_devices(num_gpus, logical_devices)   a MirroredStrategy's devices
  split_device(device_type, count)              logical devices of one device
  read_tf_config(), worker_role()               $TF_CONFIG, checked
  wait_for_cluster(cluster, kind, index, secs)  a bounded rendezvous that
                                                signals end, before
                                                TensorFlow's own (unbounded)
  planned_replicas(num_gpus, logical, multi)    the replicas, before TF starts
  lost_peer(error, task, train_dir)             the one line for a lost peer
"""

import json
import os
import re
import socket
import sys
import time

import tensorflow as tf

from cifar10_toolkit import errors
from cifar10_toolkit import run_control

GPU_MEMORY_PER_LOGICAL_DEVICE_MB = 8192


def max_logical_devices(device_type):
  """How many logical devices one device may be split into here.

  A CPU: its cores (at least 2, so that two replicas can be tried anywhere):
  more replicas than cores only queue for them. A GPU: as many 8 GB slices
  as 80 GB (the largest common card) holds, 10.
  """
  if device_type == 'GPU':
    return 80 * 1024 // GPU_MEMORY_PER_LOGICAL_DEVICE_MB
  return max(2, os.cpu_count() or 1)


def split_device(device_type, count):
  """Splits the first physical device of a type into count logical devices.

  Returns:
    The names of the logical devices.
  """
  bound = max_logical_devices(device_type)
  if count > bound:
    raise errors.UsageError(
        '--logical_devices %d: at most %d on this machine (%s)' % (
            count, bound, 'GPU: 8 GB each' if device_type == 'GPU' else
            '%d CPU cores' % (os.cpu_count() or 1)))
  physical = tf.config.list_physical_devices(device_type)[0]
  config = [tf.config.LogicalDeviceConfiguration(
      memory_limit=GPU_MEMORY_PER_LOGICAL_DEVICE_MB if device_type == 'GPU'
      else None) for _ in range(count)]
  current = tf.config.get_logical_device_configuration(physical)
  if current is None or len(current) != count:
    try:
      tf.config.set_logical_device_configuration(physical, config)
    except RuntimeError as e:
      raise errors.UsageError('--logical_devices %d: %s' % (count, e))
  return [d.name for d in tf.config.list_logical_devices(device_type)][:count]


def mirrored_devices(num_gpus, logical_devices):
  """The devices of the replicas on this machine, with the tutorial's warning."""
  gpus = tf.config.list_physical_devices('GPU')
  if logical_devices:
    return split_device('GPU' if gpus else 'CPU', logical_devices)
  if len(gpus) < num_gpus:
    print(
        'WARNING: --num_gpus %d but %d GPU(s) found; running on %s' %
        (num_gpus, len(gpus), '%d GPU(s)' % len(gpus) if gpus else 'the CPU'),
        file=sys.stderr,
        flush=True)
  if not gpus:
    return ['/cpu:0']
  return ['/gpu:%d' % i for i in range(min(num_gpus, len(gpus)))]


def read_tf_config():
  """$TF_CONFIG, checked: (cluster {type: [host:port, ...]}, task type, index).

  Raises:
    UsageError: one line saying what is missing or of the wrong type.
  """
  need = ('--strategy multi_worker needs TF_CONFIG, a JSON object with '
          '"cluster" and "task"')
  try:
    config = json.loads(os.environ.get('TF_CONFIG', ''))
  except ValueError as e:
    raise errors.UsageError('%s; it is not JSON (%s)' % (need, e))
  if not isinstance(config, dict) or 'cluster' not in config or \
      'task' not in config:
    raise errors.UsageError(need)
  cluster, task = config['cluster'], config['task']
  if not isinstance(cluster, dict) or not cluster or not all(
      isinstance(v, list) and v and all(isinstance(a, str) for a in v)
      for v in cluster.values()):
    raise errors.UsageError(
        'TF_CONFIG: "cluster" must map each task type to a list of '
        '"host:port" strings, got %s' % json.dumps(cluster))
  if not isinstance(task, dict) or not isinstance(task.get('type'), str) or \
      type(task.get('index')) is not int:
    raise errors.UsageError(
        'TF_CONFIG: "task" must be {"type": "worker", "index": 0} (the index '
        'a number), got %s' % json.dumps(task))
  for kind, addresses in sorted(cluster.items()):
    for i, address in enumerate(addresses):
      host, _, port = address.rpartition(':')
      if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.UsageError(
            'TF_CONFIG: %s %d\'s address %r is not "host:port" with a port '
            'from 1 to 65535' % (kind, i, address))
  if not 0 <= task['index'] < len(cluster.get(task['type'], [])):
    raise errors.UsageError(
        'TF_CONFIG: task %s %d is not in the cluster (%s)' % (
            task['type'], task['index'], json.dumps(cluster)))
  return cluster, task['type'], task['index']


def worker_role():
  """(is_chief, task id) from $TF_CONFIG, as MultiWorkerMirroredStrategy sees it."""
  cluster, kind, index = read_tf_config()
  is_chief = kind == 'chief' or (
      kind == 'worker' and index == 0 and 'chief' not in cluster)
  return is_chief, '%s-%d' % (kind, index)


RENDEZVOUS = b'cifar10-toolkit: waiting for the cluster\n'
HTTP2_PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'


def _split(address):
  host, _, port = address.rpartition(':')
  return host.strip('[]'), int(port)


def answers(address):
  """Whether the task at address is up: waiting for the cluster here (it
  sends RENDEZVOUS), or already in TensorFlow's set-up (a gRPC server, which
  answers HTTP/2's preface with a SETTINGS frame). A port held by some other
  program is neither."""
  try:
    with socket.create_connection(_split(address), timeout=2) as s:
      try:
        head = s.recv(64)
      except socket.timeout:  # a server that waits for the client to speak
        s.sendall(HTTP2_PREFACE)
        head = s.recv(64)
  except (OSError, ValueError):
    return False
  return head.startswith(RENDEZVOUS) or (
      len(head) >= 4 and head[3] == 0x04)  # HTTP/2's SETTINGS frame


def wait_for_cluster(cluster, kind, index, wait_secs):
  """Waits, bounded and with stop signals honoured, until every other task
  of the cluster answers, before TensorFlow's own wait (which has no bound
  and, holding the interpreter, hears no signal) begins.

  This task answers at its own address meanwhile. A signal ends the wait
  with run_control.Stopped (exit 128 + its number, nothing written).

  Raises:
    UsageError: this task's address is taken by another program, or some
      task did not answer within wait_secs (named in the message).
  """
  others = {'%s %d (%s)' % (k, i, a): a for k, addresses in
            sorted(cluster.items()) for i, a in enumerate(addresses)
            if (k, i) != (kind, index)}
  own = cluster[kind][index]
  listener = socket.socket(socket.AF_INET6 if ':' in _split(own)[0]
                           else socket.AF_INET)
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    listener.bind(('', _split(own)[1]))
  except OSError as e:
    listener.close()
    raise errors.UsageError('TF_CONFIG: this task\'s address %s cannot be '
                               'used (%s)' % (own, e.strerror or e))
  listener.listen(16)
  listener.settimeout(0.1)
  end = time.time() + wait_secs
  try:
    with run_control.signals_raise():
      # (said once the signals are heard: a signal after it is honoured)
      print('Waiting up to %g s for the cluster: this is %s %d; the others '
            'are %s' % (wait_secs, kind, index, ', '.join(others)),
            flush=True)
      while others:
        try:
          while True:
            conn, _ = listener.accept()
            with conn:
              conn.sendall(RENDEZVOUS)
        except (socket.timeout, OSError):
          pass
        for name in [n for n, a in others.items() if answers(a)]:
          del others[name]
        if others and time.time() > end:
          raise errors.UsageError(
              'the cluster did not come together within %g s '
              '(--cluster_wait_secs): no answer from %s' % (
                  wait_secs, ', '.join(others)))
  finally:
    listener.close()


def planned_replicas(num_gpus, logical_devices, multi_worker):
  """The replicas of the run, known before TensorFlow's runtime starts (for
  --slices auto and the thread pools): this machine's devices (the logical
  devices asked for, else its GPUs up to num_gpus, every GPU with
  multi_worker, else the CPU), times the workers in $TF_CONFIG's cluster."""
  gpus = len(tf.config.list_physical_devices('GPU'))
  local = logical_devices or max(1, gpus if multi_worker else
                                 min(num_gpus, gpus))
  if not multi_worker:
    return local
  cluster, _, _ = read_tf_config()
  return local * sum(len(cluster.get(k, [])) for k in ('chief', 'worker'))


def lost_peer(error, task, train_dir):
  """The one line for a multi-worker run that a peer's failure ended: which
  task TensorFlow names, and the checkpoint that every task resumes from."""
  named = sorted(set('%s %s' % m for m in re.findall(
      r'/job:(\w+)/replica:\d+/task:(\d+)', str(error))) - {
          task.replace('-', ' ')} if task else set())
  latest = tf.train.latest_checkpoint(train_dir)
  reason = re.search(r'(?:recvmsg:|Socket closed|Connection |failed to '
                     r'connect|task \S+ (?:is|has) )[^\n"{}]*', str(error))
  return errors.UsageError(
      'the cluster lost %s during training (%s%s); %s' % (
          ', '.join(named) or 'a task', type(error).__name__,
          ': ' + reason.group(0).strip() if reason else '',
          'the last checkpoint is %s: restart every task to resume from it'
          % latest if latest else 'no checkpoint was saved yet'))
