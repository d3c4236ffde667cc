"""Would the training step stay on a GPU? TensorFlow's own kernel registry says.

    python3 -m tools.gpu_audit          # every configuration; exit 1 on an offender
    python3 -m tools.gpu_audit --json   # the same, one JSON document

No GPU is needed: TensorFlow's Linux wheel registers its CUDA kernels on any
machine, and kernels.get_registered_kernels_for_op lists them with their
dtype constraints. The audit traces the training functions (the graph loop
and the step with summaries) in every configuration a user can pick (1 and 2
replicas; float32, bfloat16, float16; the data on the device and from
tf.data; with and without XLA), the summary writer's step, the evaluator's
step and the exported serving function, then walks every op of their graphs
and function libraries outside XLA-compiled functions and looks up a GPU
kernel (device GPU, or DEFAULT) whose constraints the op's dtypes meet.

An op without one would be placed on the host by soft placement, with
copies to and from the device around it: an offender, unless it is host-side
by design (kernel_audit.HOST_BY_DESIGN: writing summaries, strings, the
step's clock).

It also counts the ops the graph loop's executor runs per training step
(ops_per_step): each is a kernel launch on a GPU. The registry lookups and
the count are kernel_audit.py's; here:

  configurations(), trace(config)   every training configuration, traced
  trace_serving()                   the evaluator's step, the serving function
  run(), report(results)            audit them all; the lines main prints
"""

import os
import sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup  # noqa: E402
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import collections  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

from absl import flags  # noqa: E402

from cifar10_toolkit import cli  # noqa: E402

FLAGS = flags.FlagValues()
flags.DEFINE_boolean('json', False, 'print the results as one JSON document',
                     flag_values=FLAGS)
flags.DEFINE_multi_enum('replicas', ['1', '2'], ['1', '2'], 'audit these '
                        'replica counts only (--replicas 1 --replicas 2)',
                        flag_values=FLAGS)
flags.DEFINE_boolean('serving', True, 'audit the evaluator and the serving '
                     'function too', flag_values=FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads

import tensorflow as tf  # noqa: E402

import cifar10_input  # noqa: E402
import convnet  # noqa: E402
import data_sets  # noqa: E402
from cifar10_toolkit import device_input  # noqa: E402
from cifar10_toolkit import evaluation  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import serving  # noqa: E402
from cifar10_toolkit import summaries  # noqa: E402
from cifar10_toolkit import train_loop  # noqa: E402
from tools import kernel_audit  # noqa: E402

Config = collections.namedtuple('Config', 'replicas dtype on_device jit')

AUDIT_BATCH = 8  # examples per replica: tracing only, the size is immaterial


def configurations(replicas=(1, 2)):
  """Every training configuration the flags can pick."""
  return [Config(r, d, o, j) for r in replicas
          for d in ('float32', 'bfloat16', 'float16')
          for o in (True, False) for j in (False, True)]


def setup_devices(count=2):
  """Splits the CPU into `count` logical devices (before TensorFlow runs)."""
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def _spec(t):
  return tf.TensorSpec(t.shape, t.dtype)


def trace(config, slices=1):
  """The concrete training functions of one configuration.

  Returns:
    dict: 'train_loop', 'summary_step', 'summaries' -> ConcreteFunction.
  """
  if config.replicas == 1:
    strategy = tf.distribute.get_strategy()
  else:
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices('CPU')
         ][:config.replicas])
  with strategy.scope():
    model = convnet.ConvNet(0)
    state = convnet.TrainState(model, 0, config.dtype)
  global_batch = AUDIT_BATCH * config.replicas
  if config.on_device:
    records = tf.zeros([4 * global_batch, data_sets.CIFAR10.record_bytes],
                       tf.uint8)
    feed = device_input.DeviceInput(None, AUDIT_BATCH, 0, data_sets.CIFAR10,
                                    cifar10_input, strategy, records)
    iterator = None
  else:
    size = cifar10_input.IMAGE_SIZE
    ds = tf.data.Dataset.from_tensors((
        tf.zeros([AUDIT_BATCH, size, size, 3]),
        tf.zeros([AUDIT_BATCH], tf.int32))).repeat()
    feed = device_input.DatasetFeed()
    iterator = iter(strategy.distribute_datasets_from_function(
        lambda ctx: ds))
  loop, summary_step = train_loop.make_train_loop(
      strategy, convnet, model, state, global_batch, feed, config.jit,
      slices)
  votes = run_control.stop_votes(0, False)
  out = {'train_loop': loop.get_concrete_function(  # (as train() calls it)
      iterator, tf.constant(2), votes, tf.constant(0), tf.constant(10)),
         'summary_step': summary_step.get_concrete_function(iterator,
                                                            votes)}
  outputs = tf.nest.map_structure(_spec,
                                  out['summary_step'].structured_outputs[0])
  summarize = tf.function(lambda o, step, rate: summaries.write_summaries(
      o, model, state, step, rate, convnet, cifar10_input), autograph=False)
  with tempfile.TemporaryDirectory() as logdir:
    with tf.summary.create_file_writer(logdir).as_default():
      out['summaries'] = summarize.get_concrete_function(
          outputs, tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.float32))
  return out


def trace_serving():
  """The evaluator's step and the exported serving function.

  Returns:
    dict: 'eval_step', 'serve' -> ConcreteFunction.
  """
  size = cifar10_input.IMAGE_SIZE
  evaluator = evaluation.Evaluator(None, 'test', 0, data_sets.CIFAR10,
                                   convnet, cifar10_input,
                                   batches=tf.data.Dataset.range(0))
  classifier = serving.Classifier(convnet.ConvNet(), data_sets.CIFAR10,
                                  convnet, cifar10_input)
  return {'eval_step': evaluator.predict.get_concrete_function(
      tf.TensorSpec([None, size, size, 3], tf.float32)),
          'serve': classifier.serve.get_concrete_function()}


def run(configs=None, serving=True):
  """Audits configurations (default: all) and the serving side.

  Returns:
    list of dicts, one per configuration and one for serving: 'config',
    'offenders' and 'host' (lists of [op, dtypes, scope]), and for training
    'ops_per_step' of the graph loop (all replicas).
  """
  results = []
  for config in configs or configurations():
    functions = trace(config)
    offenders, host = kernel_audit.audit(functions.values())
    results.append({'config': config._asdict(), 'offenders': offenders,
                    'host': host,
                    'ops_per_step': kernel_audit.ops_per_step(
                        functions['train_loop'])})
  if serving:
    offenders, host = kernel_audit.audit(trace_serving().values())
    results.append({'config': 'evaluation and serving',
                    'offenders': offenders, 'host': host})
  return results


def _name(config):
  if isinstance(config, str):
    return config
  return '%d replica(s), %s, data %s, XLA %s' % (
      config['replicas'], config['dtype'],
      'on the device' if config['on_device'] else 'from tf.data',
      'on' if config['jit'] else 'off')


def report(results):
  """The audit as text: a line per configuration, offenders below it, then
  the host-side op types (by design) once."""
  lines, host = [], {}
  for r in results:
    lines.append('%-55s %s%s' % (
        _name(r['config']),
        '%d ops without a GPU kernel' % len(r['offenders'])
        if r['offenders'] else 'every op has a GPU kernel',
        '; %d ops per step' % r['ops_per_step'] if 'ops_per_step' in r
        else ''))
    lines += ['    no GPU kernel: %s (%s) in %s' % tuple(o)
              for o in r['offenders']]
    for op, dtypes, scope in r['host']:
      host.setdefault(op, kernel_audit.HOST_BY_DESIGN.get(op, 'strings'))
  lines.append('Host-side by design: ' + '; '.join(
      '%s (%s)' % kv for kv in sorted(host.items())))
  return '\n'.join(lines)


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  setup_devices()  # before TensorFlow's runtime starts: then the warm-up
  startup.end_startup(run_control.warm_up)
  results = run(configurations(tuple(int(r) for r in FLAGS.replicas)),
                FLAGS.serving)
  print(json.dumps(results, indent=1) if FLAGS.json else report(results))
  return 1 if any(r['offenders'] for r in results) else 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main, ends_startup=False))
