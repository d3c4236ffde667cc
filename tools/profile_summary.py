"""Where a training step's time goes, read from a --profile_steps trace.

    python3 -m tools.profile_summary --train_dir TRAIN_DIR --steps N

Reads the newest trace that `cifar10_train.py --profile_steps A,B` wrote
under TRAIN_DIR (plugins/profile/<run>/*.xplane.pb, TensorFlow's own
format, read with TensorFlow's own protobuf) and prints, per step, the
thread time of the host's kernels grouped by what they compute
(convolutions forward, backward-filter, backward-data; the LRN's XLA
programs; pools; matmuls; casts; the rest), the wall time the kernels span
and how busy the threads that ran them were. N is B - A, the steps the trace holds.

  op_events(space)       -> [(line id, start ps, duration ps, op type)]
  categorize(op_type)    -> the group a kernel's time falls in
  summarize(events, ...) -> {group: thread ms a step}, wall ms a step
"""

import os
import sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup  # noqa: E402
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import collections  # noqa: E402
import glob  # noqa: E402
import re  # noqa: E402

from absl import flags  # noqa: E402

from cifar10_toolkit import cli  # noqa: E402
from cifar10_toolkit import errors  # noqa: E402

FLAGS = flags.FlagValues()
flags.DEFINE_string('train_dir', None, 'the folder cifar10_train.py '
                    '--profile_steps wrote its trace into', flag_values=FLAGS)
flags.DEFINE_integer('steps', None, 'the steps the trace holds (B - A of '
                     '--profile_steps A,B)', lower_bound=1, flag_values=FLAGS)
flags.mark_flags_as_required(['train_dir', 'steps'], flag_values=FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads

from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from cifar10_toolkit import run_control  # noqa: E402

# A kernel's op type -> its group, first match wins.
GROUPS = [
    ('convolution backward-filter', r'Conv2DBackpropFilter'),
    ('convolution backward-data', r'Conv2DBackpropInput'),
    ('convolution forward', r'Conv2D'),
    ('XLA programs (the LRN)', r'^XLA$'),
    ('pools', r'MaxPool|AvgPool'),
    ('matmuls', r'MatMul'),
    ('casts', r'^Cast$'),
    ('input: gathers, transposes', r'Gather|Transpose'),
    ('update and averages', r'Assign\w*VariableOp|^Sub$|^Mul$|^AddV2$|^AddN$'),
]
# A kernel's event: 'the/op/name:OpType' (TensorFlow's TraceMe); an XLA
# program's run is an event of its own name.
OP_EVENT = re.compile(r'^[\w/\-\.]+:(\w+)$')
XLA_RUN = 'CpuExecutable::ExecuteAsyncOnStream'
# Ops that only hold others (their time is their children's).
CONTAINERS = re.compile(r'PartitionedCall|^While$|^If$|StatelessIf|'
                        r'StatelessWhile|_Xla|XlaLaunch|^Case$')


def categorize(op_type):
  """The group of GROUPS an op type falls in, or 'other'."""
  for group, pattern in GROUPS:
    if re.search(pattern, op_type):
      return group
  return 'other'


def op_events(space):
  """The host's kernel executions in a trace.

  Args:
    space: an XSpace (tensorflow.tsl.profiler.protobuf.xplane_pb2).

  Returns:
    a list of (line id, start ps, duration ps, op type): kernels ('name:Type'
    events, containers left out) and XLA programs' runs (op type 'XLA'); an
    event inside another counted one on the same thread left out.
  """
  out = []
  for plane in space.planes:
    if not plane.name.startswith('/host:CPU'):
      continue
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      events = []
      for e in line.events:
        name = names.get(e.metadata_id, '')
        match = OP_EVENT.match(name)
        if name == XLA_RUN:
          op_type = 'XLA'
        elif match and not CONTAINERS.search(match.group(1)):
          op_type = match.group(1)
        else:
          continue
        start = line.timestamp_ns * 1000 + e.offset_ps
        events.append((start, e.duration_ps, op_type))
      events.sort()
      end = -1
      for start, duration, op_type in events:
        if start < end:  # nested in the last counted event
          continue
        out.append((line.id, start, duration, op_type))
        end = start + duration
  return out


def summarize(events, steps):
  """Thread ms a step by group, and the wall ms a step the kernels span.

  Args:
    events: op_events().
    steps: how many steps the trace holds.

  Returns:
    (OrderedDict group -> ms a step, largest first; wall ms a step).
  """
  by_group = collections.Counter()
  for _, _, duration, op_type in events:
    by_group[categorize(op_type)] += duration / 1e9 / steps
  wall = (max(s + d for _, s, d, _ in events) -
          min(s for _, s, _, _ in events)) / 1e9 / steps
  return collections.OrderedDict(by_group.most_common()), wall


def newest_trace(train_dir):
  """The newest *.xplane.pb under TRAIN_DIR/plugins/profile."""
  paths = glob.glob(os.path.join(glob.escape(train_dir), 'plugins', 'profile',
                                 '*', '*.xplane.pb'))
  if not paths:
    raise errors.UsageError('%s holds no profiler trace (plugins/profile/*/'
                            '*.xplane.pb): train with --profile_steps A,B '
                            'first' % train_dir)
  return max(paths, key=os.path.getmtime)


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  path = newest_trace(FLAGS.train_dir)
  space = xplane_pb2.XSpace()
  with open(path, 'rb') as f:
    space.ParseFromString(f.read())
  events = op_events(space)
  if not events:
    raise errors.UsageError('%s holds no kernel events' % path)
  groups, wall = summarize(events, FLAGS.steps)
  threads = len({line for line, _, _, _ in events})
  total = sum(groups.values())
  print('%s: %d steps' % (path, FLAGS.steps))
  print('wall %.1f ms a step; kernels %.1f thread-ms a step on %d threads '
        '(busy %d%% of the wall time)' % (
            wall, total, threads, round(100 * total / wall / threads)))
  for group, ms in groups.items():
    print('  %-34s %6.2f ms  %4.1f%%' % (group, ms, 100 * ms / total))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
