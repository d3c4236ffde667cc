"""Several replicas: devices split on one machine, or a cluster of workers
(the plumbing of cifar10_multi_gpu_train.py).

  mirrored_devices(num_gpus, logical_devices)   a MirroredStrategy's devices
  split_device(device_type, count)              logical devices of one device
  find(source, port_base)                       Cluster: this task's cluster,
                                                from $TF_CONFIG or a Slurm
                                                job step (slurm.py)
  read_tf_config()                              $TF_CONFIG, checked
  planned_replicas(num_gpus, logical, found)    the replicas, before TF starts
  lost_peer(error, task, train_dir)             the one line for a lost peer

The rendezvous of a cluster's tasks, before TensorFlow's, is rendezvous.py.
"""

import json
import os
import re
import sys
import typing

import tensorflow as tf

from cifar10_toolkit import errors
from cifar10_toolkit import slurm

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
          '"cluster" and "task"%s' % ('' if 'TF_CONFIG' in os.environ else
                                      ', or a Slurm job step (srun)'))
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


class Cluster(typing.NamedTuple):
  """This task's cluster: spec {task type: ['host:port', ...]}, this task's
  type and index in it, where it was read ('tf_config' or 'slurm'), and
  (Slurm) this task's place among its node's tasks and their number."""
  spec: dict
  kind: str
  index: int
  source: str
  local: int = 0
  tasks_here: int = 1

  @property
  def is_chief(self):
    """As MultiWorkerMirroredStrategy sees it: the chief, else worker 0."""
    return self.kind == 'chief' or (self.kind == 'worker' and self.index == 0
                                    and 'chief' not in self.spec)

  @property
  def task(self):
    return '%s-%d' % (self.kind, self.index)

  def workers(self):
    return sum(len(self.spec.get(k, [])) for k in ('chief', 'worker'))

  def resolver(self):
    """TensorFlow's cluster resolver for MultiWorkerMirroredStrategy:
    TFConfigClusterResolver for $TF_CONFIG (as before), else the spec read
    from Slurm, with this task's GPUs (after bind_gpus)."""
    if self.source == 'tf_config':
      return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    gpus = len(tf.config.get_visible_devices('GPU'))
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(self.spec), task_type=self.kind,
        task_id=self.index, rpc_layer='grpc',
        num_accelerators={'GPU': gpus} if gpus else None)

  def gpus_each(self, gpus):
    """How many of its node's gpus this task takes: a Slurm node's GPUs are
    shared out among its tasks, unless Slurm bound them (--gpus-per-task)."""
    if self.source != 'slurm' or 'SLURM_GPUS_PER_TASK' in os.environ:
      return gpus
    return gpus // self.tasks_here if gpus else 0


def find(source='auto', port_base=None):
  """This task's cluster, from $TF_CONFIG or the Slurm job step it runs in.

  Args:
    source: 'tf_config', 'slurm', or 'auto': $TF_CONFIG when it is set (a
      note when inside a Slurm job step too), else the Slurm job step.
    port_base: Slurm: the job's first port on each node (None: derived
      from the job id).

  Returns:
    A Cluster.

  Raises:
    errors.UsageError: neither is there, or $TF_CONFIG is malformed (one
      line saying which).
    errors.FlagError: what Slurm says cannot be used (slurm.read).
  """
  in_step = slurm.in_job_step(os.environ)
  if source == 'auto':
    if 'TF_CONFIG' in os.environ and in_step:
      print('Note: TF_CONFIG is set inside a Slurm job step: the cluster is '
            'TF_CONFIG\'s (--cluster slurm to take Slurm\'s)', flush=True)
    source = 'tf_config' if 'TF_CONFIG' in os.environ or not in_step \
        else 'slurm'
  if source == 'tf_config':
    read_tf_config()  # (its checks, each one line; then TensorFlow's view)
    tf_config = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = {k: list(v) for k, v in tf_config.cluster_spec().as_dict().items()}
    return Cluster(spec, tf_config.task_type, tf_config.task_id, 'tf_config')
  step = slurm.read(os.environ, port_base)
  if len(step.spec['worker']) == 1:
    print('Note: this Slurm job step has one task: a cluster of one worker '
          '(srun -n N for N workers)', flush=True)
  return Cluster(step.spec, 'worker', step.rank, 'slurm', step.local,
                 step.tasks_here)


def bind_gpus(found):
  """A Slurm task's own share of its node's GPUs (Cluster.gpus_each), made
  the only ones TensorFlow sees; before its runtime starts.

  Raises:
    errors.UsageError: more tasks on the node than GPUs.
  """
  gpus = tf.config.list_physical_devices('GPU')
  each = found.gpus_each(len(gpus))
  if gpus and not each:
    raise errors.UsageError(
        '%d tasks on this node share %d GPU(s): run one task a GPU (srun '
        '--ntasks-per-node %d), or one a node' % (found.tasks_here, len(gpus),
                                                  len(gpus)))
  if each < len(gpus):
    tf.config.set_visible_devices(
        gpus[found.local * each:(found.local + 1) * each], 'GPU')


def planned_replicas(num_gpus, logical_devices, found=None):
  """The replicas of the run, known before TensorFlow's runtime starts (for
  --slices auto and the thread pools): this machine's devices (the logical
  devices asked for, else its GPUs up to num_gpus, a cluster task's share of
  them, else the CPU), times the workers of the cluster found."""
  gpus = len(tf.config.list_physical_devices('GPU'))
  local = logical_devices or max(1, found.gpus_each(gpus) if found else
                                 min(num_gpus, gpus))
  return local * found.workers() if found else local


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
