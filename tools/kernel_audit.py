"""Which ops of a traced TensorFlow function would leave a GPU, and how many
a graph loop's step launches: TensorFlow's own kernel registry says.

  gpu_kernel(node) -> bool           the registry has a GPU kernel for it
  walk(graph_def) -> ops outside XLA, with the function they sit in
  audit(concrete functions) -> offenders, host-side ops
  ops_per_step(train_loop concrete function) -> int

TensorFlow's Linux wheel registers its CUDA kernels on any machine, so no
GPU is needed (tools/gpu_audit.py applies this to every training configuration).
"""

import collections

import tensorflow as tf
from tensorflow.python.framework import kernels

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
    'Timestamp': "the step's time for the console, read after its loss "
                 "on the steps that print a line",
}
# Inputs whose dtype is a string are host-side by design too (class names,
# summary tags): TensorFlow keeps strings in host memory.
_STRING = tf.string.as_datatype_enum

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
