"""Would the training step stay on a GPU? TensorFlow's own kernel registry says.

    python3 gpu_audit.py            # every configuration; exit 1 on an offender
    python3 gpu_audit.py --json     # the same, one JSON document

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
by design (HOST_BY_DESIGN: writing summaries, strings, the step's clock).

It also counts the ops the graph loop's executor runs per training step
(ops_per_step): each is a kernel launch on a GPU.

Functions:
  gpu_kernel(node) -> bool           the registry has a GPU kernel for it
  walk(graph_def) -> ops outside XLA, with the function they sit in
  audit(concrete functions) -> offenders, host-side ops
  ops_per_step(train_loop concrete function) -> int
  configurations() / run(): trace every configuration (main: print them)
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import cli
if __name__ == '__main__':
  cli.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import collections
import json
import sys
import tempfile


def build_parser():
  """The audit's flags."""
  p = cli.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--json', action='store_true',
                 help='print the results as one JSON document')
  p.add_argument('--replicas', type=int, nargs='+', choices=(1, 2),
                 default=(1, 2), help='audit these replica counts only '
                 '(default: 1 2)')
  p.add_argument('--noserving', dest='serving', action='store_false',
                 help='leave out the evaluator and the serving function')
  return p


if __name__ == '__main__':
  cli.parse_early(build_parser)  # -h and flag errors, before TensorFlow loads

import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import kernels  # noqa: E402

# Ops that run on the host by design: what they do is host work (writing
# event files, encoding PNGs, strings, reading the host's clock).
HOST_BY_DESIGN = {
    'WriteScalarSummary': 'writes an event file',
    'WriteHistogramSummary': 'writes an event file',
    'WriteImageSummary': 'writes an event file',
    'WriteSummary': 'writes an event file',
    'WriteGraphSummary': 'writes an event file',
    'WriteRawProtoSummary': 'writes an event file',
    'CreateSummaryFileWriter': 'opens an event file',
    'FlushSummaryWriter': 'writes an event file',
    'SummaryWriter': 'the event file writer resource',
    'EncodePng': 'PNG encoding for the image summaries',
    'AsString': "the image summary's size, as text",
    'Timestamp': "the step's time for the console, read after its loss",
}
# Inputs whose dtype is a string are host-side by design too (class names,
# summary tags): TensorFlow keeps strings in host memory.
_STRING = tf.string.as_datatype_enum

# Control-flow and call ops: they run on the device the function runs on.
_CALLS = ('PartitionedCall', 'StatefulPartitionedCall')
_BODIES = ('While', 'StatelessWhile', 'If', 'StatelessIf', 'Case',
           'StatelessCase')


def _kernels(op_type, _cache={}):
  if op_type not in _cache:
    _cache[op_type] = [k for k in kernels.get_registered_kernels_for_op(
        op_type).kernel if k.device_type in ('GPU', 'DEFAULT')]
  return _cache[op_type]


def _attr_types(attr):
  if attr.HasField('list'):
    return list(attr.list.type)
  return [attr.type] if attr.type else []


def gpu_kernel(node):
  """Whether a GPU kernel is registered that node's dtype attributes meet.

  Args:
    node: a NodeDef.

  Returns:
    bool.
  """
  for k in _kernels(node.op):
    if all(all(t in c.allowed_values.list.type
               for t in _attr_types(node.attr[c.name]))
           for c in k.constraint if c.name in node.attr):
      return True
  return False


def _is_string(node):
  return any(_STRING in _attr_types(a) for a in node.attr.values())


Op = collections.namedtuple('Op', 'function node')


def _library(graph_def):
  return {f.signature.name: f for f in graph_def.library.function}


def _compiled(fdef):
  attr = fdef.attr.get('_XlaMustCompile')
  return bool(attr and attr.b)


def _callees(node, library):
  names = []
  if node.op in library:
    names.append(node.op)
  for a in node.attr.values():
    if a.HasField('func') and a.func.name in library:
      names.append(a.func.name)
    if a.HasField('list'):
      names += [f.name for f in a.list.func if f.name in library]
  return names


def walk(graph_def, root=None):
  """The ops of a graph and the functions it calls, outside XLA.

  Args:
    graph_def: a GraphDef with its function library.
    root: start from this library function instead of the graph's nodes.

  Returns:
    (ops, compiled): a list of Op(function name or '', NodeDef) outside
    XLA-compiled functions, each function visited once; the names of the
    XLA-compiled functions reached.
  """
  library = _library(graph_def)
  ops, compiled, seen = [], set(), set()

  def visit(nodes, where):
    for node in nodes:
      ops.append(Op(where, node))
      for name in _callees(node, library):
        if name in seen:
          continue
        seen.add(name)
        if _compiled(library[name]):
          compiled.add(name)
        else:
          visit(library[name].node_def, name)

  if root is None:
    visit(graph_def.node, '')
  else:
    seen.add(root)
    visit(library[root].node_def, root)
  return ops, compiled


def audit(functions):
  """Offenders and host-side ops of concrete functions.

  Args:
    functions: iterable of ConcreteFunction.

  Returns:
    (offenders, host): sorted lists of (op type, dtypes, scope) with no GPU
    kernel; offenders are not host-side by design, host ones are.
  """
  offenders, host = set(), set()
  for fn in functions:
    graph_def = fn.graph.as_graph_def()
    library = _library(graph_def)
    ops, _ = walk(graph_def)
    for op in ops:
      node = op.node
      if node.op in library or gpu_kernel(node):
        continue
      dtypes = ','.join(sorted({tf.as_dtype(t).name for a in node.attr.values()
                                for t in _attr_types(a)}))
      entry = (node.op, dtypes, node.name.rsplit('/', 1)[0])
      if node.op in HOST_BY_DESIGN or _is_string(node):
        host.add(entry)
      else:
        offenders.add(entry)
  return sorted(offenders), sorted(host)


def loop_body(graph_def):
  """The name of the While body function of a graph loop."""
  library = _library(graph_def)
  ops, _ = walk(graph_def)
  bodies = [op.node.attr['body'].func.name for op in ops
            if op.node.op in ('While', 'StatelessWhile')]
  if len(bodies) != 1:
    raise ValueError('expected one graph loop, found %d' % len(bodies))
  return bodies[0] if bodies[0] in library else None


# Ops that launch nothing: they hand a tensor on, or nothing.
NO_LAUNCH = ('Const', 'Identity', 'NoOp')


def _count(library, name):
  total = 0
  for node in library[name].node_def:
    callees = _callees(node, library)
    if any(_compiled(library[c]) for c in callees):
      total += 1
    elif callees:
      total += sum(_count(library, c) for c in callees)
    elif node.op not in NO_LAUNCH:
      total += 1
  return total


def ops_per_step(concrete):
  """Executor ops one step of a graph loop runs, outside XLA.

  Counted: every node of the While loop's body and of the functions it
  calls, except those that launch nothing (NO_LAUNCH) and the call nodes
  themselves (TensorFlow inlines them); both branches of a conditional
  count; an XLA-compiled function counts as one op. Before Grappler's
  optimizations (which only remove ops), so an upper bound.

  Args:
    concrete: the graph loop's ConcreteFunction (train_loop).

  Returns:
    int.
  """
  graph_def = concrete.graph.as_graph_def()
  return _count(_library(graph_def), loop_body(graph_def))


# --------------------------------------------------------------------------
# The configurations
# --------------------------------------------------------------------------

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


def trace(config, shards=1):
  """The concrete training functions of one configuration.

  Returns:
    dict: 'train_loop', 'aux_step', 'summaries' -> ConcreteFunction.
  """
  import cifar10_data
  import cifar10_input
  import device_input
  import train_loop
  import convnet
  import convnet_training
  if config.replicas == 1:
    strategy = tf.distribute.get_strategy()
  else:
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices('CPU')
         ][:config.replicas])
  with strategy.scope():
    model = convnet.ConvNet(0)
    state = convnet_training.TrainState(model, 0, config.dtype)
  global_batch = AUDIT_BATCH * config.replicas
  if config.on_device:
    records = tf.zeros([4 * global_batch, cifar10_data.RECORD_BYTES],
                       tf.uint8)
    feed = device_input.DeviceInput(None, AUDIT_BATCH, 0, strategy, records)
    iterator = None
  else:
    size = cifar10_input.IMAGE_SIZE
    ds = tf.data.Dataset.from_tensors((
        tf.zeros([AUDIT_BATCH, size, size, 3]),
        tf.zeros([AUDIT_BATCH], tf.int32))).repeat()
    feed = train_loop.DatasetFeed()
    iterator = iter(strategy.distribute_datasets_from_function(
        lambda ctx: ds))
  loop, aux_step = train_loop.make_train_loop(
      strategy, model, state, global_batch, feed, config.jit, shards)
  flags = train_loop.loop_flags(0, False)
  out = {'train_loop': loop.get_concrete_function(
      iterator, tf.constant(2), flags),
         'aux_step': aux_step.get_concrete_function(iterator, flags)}
  outputs = tf.nest.map_structure(_spec,
                                  out['aux_step'].structured_outputs[0])
  summarize = tf.function(lambda o, step, rate: train_loop.write_summaries(
      o, model, state, step, rate))
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
  import cifar10_eval
  import cifar10_input
  import convnet
  size = cifar10_input.IMAGE_SIZE
  evaluator = cifar10_eval.Evaluator(None, 'test', 0,
                                     dataset=tf.data.Dataset.range(0))
  classifier = convnet.Classifier(convnet.ConvNet())
  return {'eval_step': evaluator._predict.get_concrete_function(
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
    offenders, host = audit(functions.values())
    results.append({'config': config._asdict(), 'offenders': offenders,
                    'host': host,
                    'ops_per_step': ops_per_step(functions['train_loop'])})
  if serving:
    offenders, host = audit(trace_serving().values())
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
      host.setdefault(op, HOST_BY_DESIGN.get(op, 'strings'))
  lines.append('Host-side by design: ' + '; '.join(
      '%s (%s)' % kv for kv in sorted(host.items())))
  return '\n'.join(lines)


def main(argv=None):
  args = build_parser().parse_args(argv)
  setup_devices()
  results = run(configurations(args.replicas), args.serving)
  print(json.dumps(results, indent=1) if args.json else report(results))
  return 1 if any(r['offenders'] for r in results) else 0


if __name__ == '__main__':
  import run_control
  sys.exit(run_control.run_main(main))
