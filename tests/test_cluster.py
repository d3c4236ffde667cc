"""The multi-worker rendezvous: every task answers from a thread while it
probes the others, tasks trade their terms, and a disagreement stops all.

The in-process tests run the tasks as threads (stop signals are a main
thread's, so signals_raise is set aside there); the script tests run
cifar10_multi_gpu_train.py as its users do, one process a worker."""

import contextlib
import threading
import time

import pytest

from cifar10_toolkit import cluster
from cifar10_toolkit import errors
from conftest import free_ports, start_workers

TERMS = {'--batch_size': 16, '--max_steps': 4, 'seed': 1}


def _tasks(monkeypatch, terms, wait_secs=20):
  """Runs wait_for_cluster for each terms in threads: their outcomes."""
  monkeypatch.setattr(cluster.run_control, 'signals_raise',
                      contextlib.nullcontext)
  tasks = {'worker': ['127.0.0.1:%d' % p for p in free_ports(len(terms))]}
  outcomes = [None] * len(terms)

  def run(i):
    try:
      outcomes[i] = cluster.wait_for_cluster(tasks, 'worker', i, wait_secs,
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
  assert cluster.chief_seed(outcomes[2], tasks) == (7, 'worker 0')


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
