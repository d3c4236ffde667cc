"""The multi-worker rendezvous: a bounded wait, which a stop signal ends,
before TensorFlow's own (which has no bound and, holding the interpreter,
hears no signal), in which the tasks trade the terms that must agree.

  wait_for_cluster(cluster, kind, index, secs, terms)   every task heard
  chief_seed(heard, cluster)                    the seed the chief told

Each task answers at its own address from a thread while it calls the
others; one exchange of signed greetings (greetings.py), whoever calls,
tells both tasks each other's terms. A task leaves when it has heard every
other (a greeting that verified, naming it and addressed to itself) and
knows each has heard it (the reply verified, the ack, or a task heard that
has since become TensorFlow's gRPC server).

What a stranger gets (docs/robustness.md says it for users): the task
listens on its own host only; callers from outside the cluster's addresses
are closed unanswered; a greeting that does not verify, is malformed or
too deep, or comes too slowly is dropped, noted once; many connections at
once are served together, each bounded in bytes and seconds, so none holds
the port. Greetings are keyed by the cluster's addresses and
$CIFAR10_CLUSTER_SECRET: without the secret, that stops strangers and other
clusters that do not know the addresses, not one who does.
"""

import errno
import json
import os
import socket
import time

from cifar10_toolkit import errors
from cifar10_toolkit import greetings
from cifar10_toolkit import run_control

# A task that sees a disagreement keeps answering this long (or until it
# knows every task heard it), so that the others hear its terms and stop too.
LINGER_SECS = 5


def _listen(own, task):
  """A socket listening at this task's own host and port (every interface
  when the host is not this machine's: a NAT or a service name)."""
  host, port = greetings.split(own)
  try:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  except (OSError, UnicodeError) as e:
    raise errors.UsageError('TF_CONFIG: this task\'s address %s cannot be '
                            'resolved (%s)' % (own, e))
  family, _, _, _, where = infos[0]
  listener = socket.socket(family, socket.SOCK_STREAM)
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    try:
      listener.bind(where)
    except OSError as e:
      if e.errno != errno.EADDRNOTAVAIL:  # not an address of this machine
        raise
      task.note('anywhere', 'this task\'s host %s is not an address of '
                'this machine: the rendezvous listens on every interface'
                % host)
      listener.bind(('', port))
  except OSError as e:
    listener.close()
    raise errors.UsageError('TF_CONFIG: this task\'s address %s cannot be '
                            'used (%s)' % (own, e.strerror or e))
  listener.listen(128)
  return listener


def wait_for_cluster(cluster, kind, index, wait_secs, terms=None):
  """Waits, bounded and with stop signals honoured, until every other task
  of the cluster has been heard and has heard this one.

  Args:
    cluster, kind, index: cluster.read_tf_config()'s.
    wait_secs: the bound.
    terms: JSON-able {name: value} that every task must share (its
      'seed' entry excepted: the chief's is taken).

  Returns:
    {task name: its terms} of every task, itself included.

  Raises:
    UsageError: this task's address cannot be used, some task was not
      heard within wait_secs, or two tasks' terms differ (each named).
    run_control.Stopped: a stop signal (exit 128 + its number).
  """
  me = '%s %d' % (kind, index)
  others = {'%s %d' % (k, i): a for k, addresses in sorted(cluster.items())
            for i, a in enumerate(addresses) if (k, i) != (kind, index)}
  task = greetings.Task(me, others, dict(terms or {}),
                        greetings.cluster_key(cluster))
  task.allowed = greetings.allowed_addresses(cluster)
  listener = _listen(cluster[kind][index], task)
  answering = greetings.Answering(listener, task)
  began, secret = time.monotonic(), greetings.SECRET_ENV
  try:
    with run_control.signals_raise():
      # (said once the signals are heard: a signal after it is honoured)
      print('Waiting up to %g s for the cluster: this is %s; the others '
            'are %s; greetings signed with %s' % (
                wait_secs, me, ', '.join('%s (%s)' % o for o in
                                         others.items()),
                secret if os.environ.get(secret) else 'the cluster\'s '
                'addresses only (set %s on a shared network)' % secret),
            flush=True)
      disagreed = None  # when a disagreement was first seen
      resolved = time.monotonic()
      while True:
        if time.monotonic() - resolved > 1:  # (a host's name may resolve
          resolved = time.monotonic()  # only once its task is up)
          task.allowed = task.allowed | greetings.allowed_addresses(cluster)
        for name in [n for n in others if n not in task.heard_us]:
          got = greetings.call(others[name], name, task)
          if got == greetings.GRPC:
            if name in task.heard:  # it left: it had heard us
              task.record(name, heard_us=True)
          elif got is not None:
            task.record(name, got, heard_us=True)
        with task.lock:
          heard = dict(task.heard, **{me: task.terms})
          missing = [n for n in others if n not in task.heard_us or
                     n not in task.heard]
        differ = _disagreement(heard)
        if differ:  # (told on at once, every task hears it from us:
          disagreed = disagreed or time.monotonic()  # a short linger)
          if not missing or time.monotonic() - disagreed > LINGER_SECS:
            raise errors.UsageError(differ)
        elif not missing:
          return heard
        if time.monotonic() - began > wait_secs:
          raise errors.UsageError(
              'the cluster did not come together within %g s '
              '(--cluster_wait_secs): no answer from %s%s' % (
                  wait_secs, ', '.join('%s (%s)' % (n, others[n])
                                       for n in missing),
                  '; a greeting was ignored: every task needs the same '
                  'TF_CONFIG cluster and %s' % secret
                  if 'bad' in task.noted else ''))
        time.sleep(0.1)
  finally:
    answering.close()
    listener.close()


def _disagreement(heard):
  """The first term two tasks differ on, worded for the user, or None."""
  names = sorted({k for t in heard.values() for k in t} - {'seed'})
  for key in names:
    values = {}
    for task, t in sorted(heard.items()):
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
  when this task is the chief."""
  chief = 'chief 0' if 'chief' in cluster else 'worker 0'
  terms = heard.get(chief)
  if isinstance(terms, dict) and type(terms.get('seed')) is int:
    return terms['seed'], chief
  return None
