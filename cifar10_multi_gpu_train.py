"""Trains the CIFAR-10 convnet on several GPUs, or several machines.

    python3 cifar10_multi_gpu_train.py --num_gpus 2
    python3 cifar10_multi_gpu_train.py --logical_devices 2   # 2 replicas, 1 device
    TF_CONFIG='{...}' python3 cifar10_multi_gpu_train.py --strategy multi_worker
    srun -N2 --ntasks-per-node 1 python3 cifar10_multi_gpu_train.py --cluster slurm

As in the tutorial each replica takes a full batch_size, so a step consumes
batch_size x replicas examples; gradients are summed over replicas from
per-replica losses scaled by 1/replicas (the update equals one device's on the
combined batch) and applied once; examples/sec counts all replicas. The loop,
checkpoints, summaries, resume, NaN stop and Ctrl-C handling are
cifar10_train.py's own (cifar10_toolkit.train_loop), so either script resumes
the other's runs and cifar10_eval.py evaluates both.

--strategy multi_worker uses tf.distribute.MultiWorkerMirroredStrategy, its
cluster read from the standard TF_CONFIG variable or, launched with srun,
from the Slurm job step (--cluster); only the chief writes summaries and
the canonical checkpoints into train_dir (which the workers share).
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys

from absl import flags

import data_sets
import models
from cifar10_toolkit import cli

FLAGS = flags.FlagValues()
# cifar10_train.py's flags
cli.define_training_flags(FLAGS, (data_sets.NAMES, data_sets.get))
cli.define_model_flag(FLAGS, models.NAMES, models.known, models.CHOICES)
flags.DEFINE_integer('num_gpus', 1, 'how many GPUs to use; with fewer '
                     'present, a warning, and it runs on those there are',
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('logical_devices', 0, 'split one device (the first GPU, '
                     'else the CPU) into this many logical devices and train a '
                     'replica on each: multi-replica training without several '
                     'GPUs (0: off)', lower_bound=0,
                     upper_bound=cli.MAX_LOGICAL_DEVICES, flag_values=FLAGS)
flags.DEFINE_enum('strategy', 'mirrored', ['mirrored', 'multi_worker'],
                  "'mirrored': one machine; 'multi_worker': "
                  'MultiWorkerMirroredStrategy from $TF_CONFIG',
                  flag_values=FLAGS)
flags.DEFINE_enum('cluster', 'auto', ['auto', 'tf_config', 'slurm'],
                  "multi_worker: where the cluster comes from: $TF_CONFIG, "
                  "the Slurm job step the task runs in (srun), or 'auto': "
                  'TF_CONFIG if set, else Slurm; given, it implies --strategy '
                  'multi_worker', flag_values=FLAGS)
flags.DEFINE_integer('port_base', None, "--cluster slurm: the job's first "
                     'port on each node, one a task there (default: 10000 + '
                     '64 x (job id mod 350), so that jobs sharing a node do '
                     'not share ports)', lower_bound=1024, upper_bound=65535,
                     flag_values=FLAGS)
flags.DEFINE_float('cluster_wait_secs', 300, "multi_worker: how long to wait "
                   "for every task of the cluster to answer before "
                   'giving up, naming the missing ones', flag_values=FLAGS)
cli.positive('cluster_wait_secs', FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads
  models.before_tensorflow(FLAGS.model)  # (oneDNN for some models)

import tensorflow as tf  # noqa: E402
import cifar10_input  # noqa: E402
from cifar10_toolkit import checkpoints  # noqa: E402
from cifar10_toolkit import cluster  # noqa: E402
from cifar10_toolkit import config  # noqa: E402
from cifar10_toolkit import errors  # noqa: E402
from cifar10_toolkit import hardware  # noqa: E402
from cifar10_toolkit import rendezvous  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import run_folder  # noqa: E402
from cifar10_toolkit import train_loop  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  if FLAGS['cluster'].present and FLAGS.strategy != 'multi_worker':
    if FLAGS['strategy'].present:
      raise errors.FlagError('--cluster needs --strategy multi_worker')
    FLAGS.strategy = 'multi_worker'
  multi_worker = FLAGS.strategy == 'multi_worker'
  found = cluster.find(FLAGS.cluster, FLAGS.port_base) if multi_worker \
      else None
  is_chief, task = (found.is_chief, found.task) if found else (True, None)
  device = hardware.describe()
  run = config.resolve(FLAGS, device, cluster.planned_replicas(
      FLAGS.num_gpus, FLAGS.logical_devices, found),
                       data_sets.get(FLAGS.dataset), models.get(FLAGS.model),
                       cifar10_input)
  hardware.set_threads(device, run.slices)  # before TensorFlow's runtime starts
  worker_dir = None
  if multi_worker:
    cluster.bind_gpus(found)
    if FLAGS.logical_devices:
      cluster.split_device('GPU' if tf.config.list_physical_devices('GPU')
                           else 'CPU', FLAGS.logical_devices)
    heard = rendezvous.wait_for_cluster(found.spec, found.kind, found.index,
                                        FLAGS.cluster_wait_secs,
                                        run.cluster_terms())
    told = None if is_chief else rendezvous.chief_seed(heard, found.spec)
    if told:
      run = run.with_chief_seed(*told, task='%s %d' % (found.kind,
                                                       found.index))
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=found.resolver())
    # TensorFlow's cluster set-up takes over the stop signals: take them
    # back, recording one that comes before training starts (GracefulStop
    # then stops at the first chance, on every worker)
    run_control.record_stop_signals()
    if not is_chief:  # its own, inside train_dir: a killed worker's is
      # removed by its next start, and nothing is written elsewhere
      worker_dir = os.path.join(run.train_dir,
                                checkpoints.WORKER_DIR_PREFIX + task)
      run_folder.remove_own_folder(worker_dir)  # (a link: the link alone)
      run_folder.prepare_dir(worker_dir, '--train_dir')
  else:
    strategy = tf.distribute.MirroredStrategy(
        cluster.mirrored_devices(FLAGS.num_gpus, FLAGS.logical_devices))
  startup.end_startup(run_control.warm_up)  # (the strategy made: it may start)
  try:
    return train_loop.train(run, strategy, is_chief, worker_dir)
  except tf.errors.OpError as e:
    if not multi_worker:
      raise
    raise cluster.lost_peer(e, task, run.train_dir)
  finally:
    if worker_dir:
      run_folder.remove_own_folder(worker_dir)


if __name__ == '__main__':
  sys.exit(run_control.run_main(main, ends_startup=False))
