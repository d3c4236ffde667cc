"""Several replicas: devices split on one machine, or a cluster of workers
(the plumbing of cifar10_multi_gpu_train.py).

  mirrored_devices(num_gpus, logical_devices)   a MirroredStrategy's devices
  split_device(device_type, count)              logical devices of one device
  read_tf_config(), worker_role()               $TF_CONFIG, checked
  wait_for_cluster(cluster, kind, index, secs, terms)   a bounded
                                                rendezvous that signals end,
                                                before TensorFlow's own
                                                (unbounded); the tasks trade
                                                terms, which must agree
  chief_seed(heard, cluster)                    the seed the chief told
  planned_replicas(num_gpus, logical, multi)    the replicas, before TF starts
  lost_peer(error, task, train_dir)             the one line for a lost peer
"""

import json
import os
import re
import socket
import sys
import threading
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
MAX_HELLO_BYTES = 1 << 16  # a task's line of terms, at most
# A task that sees a disagreement keeps answering this long (or until it has
# heard every task), so that the others hear its terms and stop too.
LINGER_SECS = 5


def _split(address):
  host, _, port = address.rpartition(':')
  return host.strip('[]'), int(port)


def answers(address, hello=b''):
  """Whether the task at address is up, and what it runs with.

  A task waiting for the cluster sends RENDEZVOUS and a JSON line of its
  terms; hello (this task's own line) is sent back, so that the peer knows
  ours too. A task already in TensorFlow's set-up is a gRPC server, which
  answers HTTP/2's preface with a SETTINGS frame. A port held by some other
  program is neither.

  Returns:
    The peer's {'task': name, 'terms': {...}}; {} for a gRPC server (up,
    terms unknown); None when nothing of this cluster answers.
  """
  try:
    with socket.create_connection(_split(address), timeout=2) as s:
      try:
        head = s.recv(64)
      except socket.timeout:  # a server that waits for the client to speak
        s.sendall(HTTP2_PREFACE)
        head = s.recv(64)
      if not head.startswith(RENDEZVOUS[:len(head)]) or not head:
        return {} if len(head) >= 4 and head[3] == 0x04 else None
      reply = _read_line(s, head)[len(RENDEZVOUS):]
      s.sendall(hello)
  except (OSError, ValueError):
    return None
  try:
    peer = json.loads(reply)
  except ValueError:
    return None
  return peer if isinstance(peer, dict) and 'terms' in peer else None


def _read_line(conn, head=b''):
  """Bytes up to the line after RENDEZVOUS (or a hello line), bounded."""
  data, want = head, 2 if head.startswith(RENDEZVOUS[:1]) else 1
  while data.count(b'\n') < want and len(data) < MAX_HELLO_BYTES:
    chunk = conn.recv(4096)
    if not chunk:
      break
    data += chunk
  return data


class _Answering:
  """This task's address, answered from a thread while the cluster forms:
  RENDEZVOUS and our terms to each caller, whose own line is kept."""

  def __init__(self, listener, hello):
    self.heard, self._lock = {}, threading.Lock()
    self._listener, self._hello = listener, hello
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._serve, daemon=True)
    self._thread.start()

  def _serve(self):
    while not self._done.is_set():
      try:
        conn, _ = self._listener.accept()
      except (socket.timeout, OSError):
        continue
      with conn:
        try:
          conn.settimeout(2)
          conn.sendall(RENDEZVOUS + self._hello)
          peer = json.loads(_read_line(conn))
        except (OSError, ValueError):
          continue
      if isinstance(peer, dict) and isinstance(peer.get('task'), str):
        with self._lock:
          self.heard[peer['task']] = peer.get('terms')

  def take(self):
    with self._lock:
      return dict(self.heard)

  def close(self):
    self._done.set()
    self._thread.join(timeout=5)


def wait_for_cluster(cluster, kind, index, wait_secs, terms=None):
  """Waits, bounded and with stop signals honoured, until every other task
  of the cluster has answered and told its terms, before TensorFlow's own
  wait (which has no bound and, holding the interpreter, hears no signal)
  begins.

  This task answers at its own address meanwhile, from a thread. Each pair
  of tasks trades terms in one exchange, whichever calls: so a task leaves
  only when it knows every other's terms, and every task sees every
  disagreement. A signal ends the wait with run_control.Stopped (exit 128 +
  its number, nothing written).

  Args:
    cluster, kind, index: read_tf_config()'s.
    wait_secs: the bound.
    terms: JSON-able {name: value} that every task must share (its
      'seed' entry excepted: the chief's is taken).

  Returns:
    {task name: its terms} of every task this one heard, itself included
    (a task heard only as a gRPC server has None).

  Raises:
    UsageError: this task's address is taken by another program, some task
      did not answer within wait_secs, or two tasks' terms differ (each
      named in the message).
  """
  me = '%s %d' % (kind, index)
  terms = dict(terms or {}, **{'TF_CONFIG cluster': cluster})
  others = {'%s %d' % (k, i): a for k, addresses in sorted(cluster.items())
            for i, a in enumerate(addresses) if (k, i) != (kind, index)}
  hello = (json.dumps({'task': me, 'terms': terms}) + '\n').encode()
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
  heard = {me: terms}
  answering = _Answering(listener, hello)
  try:
    with run_control.signals_raise():
      # (said once the signals are heard: a signal after it is honoured)
      print('Waiting up to %g s for the cluster: this is %s; the others '
            'are %s' % (wait_secs, me, ', '.join(
                '%s (%s)' % o for o in others.items())), flush=True)
      disagreed = None  # when a disagreement was first seen
      while True:
        heard.update({n: t for n, t in answering.take().items()
                      if n in others})
        for name in [n for n in others if n not in heard]:
          peer = answers(others[name], hello)
          if peer is not None:
            heard[name] = peer.get('terms')
        missing = [n for n in others if n not in heard]
        differ = _disagreement(heard)
        if differ:  # (told on at once, every task hears it from us:
          disagreed = disagreed or time.time()  # a short linger)
          if not missing or time.time() - disagreed > LINGER_SECS:
            raise errors.UsageError(differ)
        elif not missing:
          return heard
        if time.time() > end:
          raise errors.UsageError(
              'the cluster did not come together within %g s '
              '(--cluster_wait_secs): no answer from %s' % (
                  wait_secs, ', '.join('%s (%s)' % (n, others[n])
                                       for n in missing)))
        time.sleep(0.1)
  finally:
    answering.close()
    listener.close()


def _disagreement(heard):
  """The first term two tasks heard differ on, worded for the user, or None
  when they agree (a task heard only as a gRPC server has no terms)."""
  known = {n: t for n, t in heard.items() if isinstance(t, dict)}
  names = sorted({k for t in known.values() for k in t} - {'seed'})
  for key in names:
    values = {}
    for task, t in sorted(known.items()):
      values.setdefault(json.dumps(t.get(key), sort_keys=True), []).append(
          task)
    if len(values) > 1:
      return ("the cluster's tasks disagree on %s (%s): every task must be "
              'given the same' % (key, '; '.join(
                  '%s: %s' % (', '.join(tasks), v) for v, tasks in
                  values.items())))
  return None


def chief_seed(heard, cluster):
  """The seed the chief told at the rendezvous: (seed, task name), or None
  (the chief was heard only as a gRPC server)."""
  chief = 'chief 0' if 'chief' in cluster else 'worker 0'
  terms = heard.get(chief)
  if isinstance(terms, dict) and isinstance(terms.get('seed'), int):
    return terms['seed'], chief
  return None


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
