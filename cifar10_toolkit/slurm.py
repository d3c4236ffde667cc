"""A Slurm job step's tasks as a multi-worker cluster (--cluster slurm).

  in_job_step(environ)           whether this process is a task of a step
  read(environ, port_base)       Step: the cluster, this task's rank, its
                                 node's tasks and its place among them

TensorFlow's SlurmClusterResolver parses Slurm's host lists and tasks per
node here (expand_hostlist, expand_tasks_per_node). Its cluster_spec() is
not used: it needs GPUs (nvidia-smi, or a division by zero with
gpus_per_node=0), gives every job the same ports (8888 up), and places the
ranks on the nodes sorted by name (n10 before n9), not where Slurm put
them. Here each rank is placed as Slurm's distribution placed it (block,
the default, or cyclic), and the result is checked against what Slurm told
this task (SLURMD_NODENAME, SLURM_LOCALID). No command is run (scontrol is
not needed).
"""

import collections

from tensorflow.python.distribute.cluster_resolver import (
    slurm_cluster_resolver as tf_slurm)

from cifar10_toolkit import errors

# A job's ports on a node: port_base + its task's place there. Derived from
# the job id when --port_base is not given, so that two jobs on one node do
# not share them: 10000 + 64 x (job id mod 350), below Linux's ephemeral
# ports (32768 up).
PORTS_PER_JOB, PORT_FLOOR, PORT_SLOTS = 64, 10000, 350

Step = collections.namedtuple('Step', 'spec rank local tasks_here')


def in_job_step(environ):
  """Whether this process is a task of a Slurm job step (srun), not the
  batch script itself."""
  return 'SLURM_STEP_ID' in environ and 'SLURM_PROCID' in environ


def _get(environ, name, number=True):
  value = environ.get(name)
  if value is None:
    raise errors.FlagError('--cluster slurm: %s is not set: not a task of a '
                           'Slurm job step (launch it with srun)' % name)
  if number and not value.isdigit():
    raise errors.FlagError('--cluster slurm: %s=%r is not a number' % (
        name, value))
  return int(value) if number else value


def _placement(tasks_per_node, distribution):
  """[node index of each rank] as Slurm places them."""
  if distribution == 'block':
    return [i for i, n in enumerate(tasks_per_node) for _ in range(n)]
  left, order = list(tasks_per_node), []  # cyclic: one a node in turn
  while any(left):
    for i, n in enumerate(left):
      if n:
        order.append(i)
        left[i] -= 1
  return order


def read(environ, port_base=None):
  """This job step's cluster: {'worker': ['host:port', ...]} in rank order.

  Args:
    environ: the task's environment (Slurm's SLURM_* variables).
    port_base: the first port of the job on each node, or None: derived
      from SLURM_JOB_ID.

  Returns:
    Step(spec, rank, local: its place among its node's tasks, tasks_here).

  Raises:
    errors.FlagError: not a task of a job step, SLURM_* values that
      disagree, a distribution other than block or cyclic, ports past 65535.
  """
  if not in_job_step(environ):
    raise errors.FlagError(
        '--cluster slurm: not a task of a Slurm job step (no SLURM_STEP_ID: '
        'launch it with srun, also inside an sbatch script)')
  rank = _get(environ, 'SLURM_PROCID')
  count = _get(environ, 'SLURM_STEP_NUM_TASKS')
  try:
    nodes = tf_slurm.expand_hostlist(_get(environ, 'SLURM_STEP_NODELIST',
                                          False))
    per_node = tf_slurm.expand_tasks_per_node(
        _get(environ, 'SLURM_STEP_TASKS_PER_NODE', False))
  except ValueError as e:
    raise errors.FlagError('--cluster slurm: %s' % e)
  distribution = environ.get('SLURM_DISTRIBUTION', 'block').split(':')[0]
  if distribution not in ('block', 'cyclic'):
    raise errors.FlagError(
        '--cluster slurm: SLURM_DISTRIBUTION=%s: only block (the default) '
        'and cyclic placements are read; launch with -m block' %
        environ['SLURM_DISTRIBUTION'])
  disagree = lambda what: errors.FlagError(
      '--cluster slurm: the SLURM_* values disagree: %s' % what)
  if len(nodes) != len(per_node):
    raise disagree('SLURM_STEP_NODELIST names %d node(s), '
                   'SLURM_STEP_TASKS_PER_NODE %d' % (len(nodes),
                                                     len(per_node)))
  if sum(per_node) != count or not 0 <= rank < count:
    raise disagree('SLURM_STEP_TASKS_PER_NODE makes %d task(s), '
                   'SLURM_STEP_NUM_TASKS %d, SLURM_PROCID %d' % (
                       sum(per_node), count, rank))
  placed = _placement(per_node, distribution)
  local = [placed[:r].count(placed[r]) for r in range(count)]
  here = environ.get('SLURMD_NODENAME', nodes[placed[rank]])
  if (nodes[placed[rank]], local[rank]) != (
      here, int(environ.get('SLURM_LOCALID', local[rank]))):
    raise disagree('rank %d would be task %d on %s, but SLURMD_NODENAME=%s '
                   'SLURM_LOCALID=%s' % (rank, local[rank], nodes[placed[rank]],
                                         here, environ.get('SLURM_LOCALID',
                                                           '(unset)')))
  if port_base is None:
    port_base = PORT_FLOOR + PORTS_PER_JOB * (
        _get(environ, 'SLURM_JOB_ID') % PORT_SLOTS)
  if port_base + max(per_node) - 1 > 65535:
    raise errors.FlagError('--port_base %d: with %d task(s) on a node the '
                           'ports pass 65535' % (port_base, max(per_node)))
  spec = {'worker': ['%s:%d' % (nodes[placed[r]], port_base + local[r])
                     for r in range(count)]}
  return Step(spec, rank, local[rank], per_node[placed[rank]])
