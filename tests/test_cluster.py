"""The multi-worker rendezvous: every task answers from a thread while it
probes the others, tasks trade their terms, and a disagreement stops all.

The in-process tests run the tasks as threads (stop signals are a main
thread's, so signals_raise is set aside there); the script tests run
cifar10_multi_gpu_train.py as its users do, one process a worker."""

import contextlib
import json
import socket
import threading
import time

import pytest

from cifar10_toolkit import greetings
from cifar10_toolkit import rendezvous
from cifar10_toolkit import errors
from conftest import free_ports, start_workers

TERMS = {'--batch_size': 16, '--max_steps': 4, 'seed': 1}


def _tasks(monkeypatch, terms, wait_secs=20):
  """Runs wait_for_cluster for each terms in threads: their outcomes."""
  monkeypatch.setattr(rendezvous.run_control, 'signals_raise',
                      contextlib.nullcontext)
  tasks = {'worker': ['127.0.0.1:%d' % p for p in free_ports(len(terms))]}
  outcomes = [None] * len(terms)

  def run(i):
    try:
      outcomes[i] = rendezvous.wait_for_cluster(tasks, 'worker', i, wait_secs,
                                             terms[i])
    except errors.UsageError as e:
      outcomes[i] = e
  threads = [threading.Thread(target=run, args=(i,)) for i in
             range(len(terms))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert not any(t.is_alive() for t in threads)
  return tasks, outcomes


def test_three_tasks_started_together_meet_and_know_each_others_terms(
    monkeypatch):
  """Started in step (where tasks that answered only between their own
  probes once kept missing each other), each leaves within seconds."""
  began = time.time()
  tasks, outcomes = _tasks(monkeypatch, [dict(TERMS, seed=s)
                                         for s in (7, 8, 9)])
  assert time.time() - began < 15
  for out in outcomes:
    assert sorted(out) == ['worker 0', 'worker 1', 'worker 2']
    assert [out['worker %d' % i]['seed'] for i in range(3)] == [7, 8, 9]
  assert rendezvous.chief_seed(outcomes[2], tasks) == (7, 'worker 0')


def test_a_disagreement_stops_every_task_naming_the_flag(monkeypatch):
  _, outcomes = _tasks(monkeypatch, [TERMS, TERMS,
                                     dict(TERMS, **{'--batch_size': 64})])
  for out in outcomes:
    assert isinstance(out, errors.UsageError), out
    assert str(out) == (
        "the cluster's tasks disagree on --batch_size (worker 0, worker 1: "
        '16; worker 2: 64): every task must be given the same')


def test_the_seed_may_differ_the_chief_settles_it(monkeypatch):
  _, outcomes = _tasks(monkeypatch, [TERMS, dict(TERMS, seed=2)])
  assert all(isinstance(out, dict) for out in outcomes)


class _Waiting:
  """worker 0 of a two-task cluster, waiting in a thread (a peer that never
  comes: it waits until closed by its bound)."""

  def __init__(self, monkeypatch, wait_secs=30):
    monkeypatch.setattr(rendezvous.run_control, 'signals_raise',
                        contextlib.nullcontext)
    self.tasks = {'worker': ['127.0.0.1:%d' % p for p in free_ports(2)]}
    self.port = int(self.tasks['worker'][0].rpartition(':')[2])
    self.outcome = None
    self.thread = threading.Thread(target=self._run, args=(wait_secs,),
                                   daemon=True)
    self.thread.start()
    for _ in range(100):  # until it answers
      try:
        socket.create_connection(('127.0.0.1', self.port), 1).close()
        break
      except OSError:
        time.sleep(0.05)

  def _run(self, wait_secs):
    try:
      self.outcome = rendezvous.wait_for_cluster(
          self.tasks, 'worker', 0, wait_secs, dict(TERMS, seed=7))
    except errors.UsageError as e:
      self.outcome = e

  def peer(self, terms=None, key=None):
    """worker 1's side of an exchange: a _Task with the cluster's key."""
    task = greetings.Task('worker 1', {'worker 0': self.tasks['worker'][0]},
                            dict(terms or TERMS), key or
                            greetings.cluster_key(self.tasks))
    return task

  def call(self, task):
    return greetings.call(self.tasks['worker'][0], 'worker 0', task)

  def greet(self, line):
    """Connects, reads the nonce, sends line (made from the nonce), and
    returns what comes back before the port closes."""
    with socket.create_connection(('127.0.0.1', self.port), 3) as s:
      head = b''
      while head.count(b'\n') < 2:
        head += s.recv(4096)
      nonce = json.loads(head.split(b'\n')[1])['nonce']
      s.sendall(line(nonce))
      try:
        return s.recv(4096)
      except OSError:
        return b''


def _signed(key, nonce, greeting):
  text = json.dumps(greeting)
  return (json.dumps({'greeting': text, 'nonce': 'n', 'mac': greetings.sign(
      key, nonce, text)}) + '\n').encode()


def test_only_genuine_greetings_are_believed(monkeypatch, capsys):
  """The issue's forgeries, each against a waiting task: a disagreement
  unsigned, worker 0's own terms echoed back as worker 1's, a seed out of
  --seed's range though signed, a key without the secret, JSON nested
  50,000 deep, a line past the bound. None is recorded, the thread goes on
  answering, and the genuine peer is then heard and hears worker 0."""
  monkeypatch.setenv(greetings.SECRET_ENV, 's3cret')
  w = _Waiting(monkeypatch)
  key = greetings.cluster_key(w.tasks)
  monkeypatch.setenv(greetings.SECRET_ENV, '')
  guessed = greetings.cluster_key(w.tasks)  # the cluster known, not the secret
  monkeypatch.setenv(greetings.SECRET_ENV, 's3cret')
  forged = dict(TERMS, **{'--batch_size': 64})
  lines = [
      lambda n: b'{"task": "worker 1", "terms": {"--batch_size": 64}}\n',
      lambda n: _signed(guessed, n, {'task': 'worker 1', 'to': 'worker 0',
                                     'terms': forged}),
      lambda n: _signed(key, n, {'task': 'worker 1', 'to': 'worker 0',
                                 'terms': dict(TERMS, seed=2 ** 40)}),
      lambda n: _signed(key, n, {'task': 'worker 1', 'to': 'worker 1',
                                 'terms': forged}),
      lambda n: _signed(key, n + 'x', {'task': 'worker 1', 'to': 'worker 0',
                                       'terms': forged}),
      lambda n: b'[' * 50000 + b'\n',
      lambda n: b'x' * 70000,
  ]
  for line in lines:
    assert w.greet(line) == b''
  assert w.thread.is_alive() and w.outcome is None
  assert w.call(w.peer(key=guessed)) is None  # (our side checks it too)
  assert w.call(w.peer()) == dict(TERMS, seed=7)
  w.thread.join(10)
  assert sorted(w.outcome) == ['worker 0', 'worker 1']
  assert w.outcome['worker 1'] == TERMS
  out = capsys.readouterr().out
  assert out.count('Note: the rendezvous ignored a greeting that is '
                   'malformed or not signed for this cluster') == 1, out
  assert 'greetings signed with CIFAR10_CLUSTER_SECRET' in out


def test_a_flood_of_idle_and_dripping_callers_does_not_hold_the_port(
    monkeypatch, capsys):
  """500 idle connections and one sending a byte a second: a genuine
  greeting is still answered at once; the strangers are cut at 2 s."""
  w = _Waiting(monkeypatch)
  idle = [socket.create_connection(('127.0.0.1', w.port), 3)
          for _ in range(500)]
  drip = socket.create_connection(('127.0.0.1', w.port), 3)
  began = time.monotonic()
  try:
    for _ in range(3):
      drip.send(b'{')
      time.sleep(1)
    t = time.monotonic()
    assert w.call(w.peer()) == dict(TERMS, seed=7)
    assert time.monotonic() - t < 1
    with pytest.raises(OSError):  # cut off within its 2 s
      drip.send(b'{' * 100000)
      drip.send(b'{' * 100000)
  finally:
    for s in idle + [drip]:
      s.close()
  assert time.monotonic() - began < 10
  w.thread.join(10)
  assert sorted(w.outcome) == ['worker 0', 'worker 1']
  assert 'Note: the rendezvous cut off a caller that did not greet within ' \
      '2 s' in capsys.readouterr().out


def test_strangers_outside_the_cluster_are_not_answered(monkeypatch, capsys):
  """It listens on the task's own host alone (127.0.0.2 is another loopback
  address), and a caller from an address outside the cluster is closed
  unanswered, noted once."""
  w = _Waiting(monkeypatch, wait_secs=3)
  with pytest.raises(ConnectionRefusedError):
    socket.create_connection(('127.0.0.2', w.port), 3)
  for _ in range(3):
    with socket.socket() as s:
      s.bind(('127.0.0.2', 0))
      s.settimeout(3)
      s.connect(('127.0.0.1', w.port))
      assert s.recv(100) == b''
  w.thread.join(10)
  assert str(w.outcome).startswith('the cluster did not come together')
  assert capsys.readouterr().out.count(
      'Note: the rendezvous ignores connections from 127.0.0.2: not an '
      'address of the cluster') == 1


@pytest.mark.slow
def test_workers_with_another_batch_size_both_stop_in_one_line(
    shared_bin_dir, tmp_path):
  """Worker 1 given --batch_size 32 where worker 0 has 16: neither trains."""
  d = tmp_path / 't'
  procs = start_workers(shared_bin_dir, str(d), 4, free_ports(2),
                        per_worker=[[], ['--batch_size', '32']])
  try:
    outs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 1, out
    assert out.strip().splitlines()[-1] == (
        "cifar10_multi_gpu_train.py: error: the cluster's tasks disagree "
        'on --batch_size (worker 0: 16; worker 1: 32): every task must be '
        'given the same'), out
    assert 'Training from' not in out
  assert not (d / 'checkpoint').exists()
