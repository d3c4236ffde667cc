"""Several machines as clusters run them: a Slurm job step's tasks read as
a cluster (--cluster slurm), on a real one-node Slurm cluster started here
by tools/local_slurm.sh (Debian's slurm-wlm and munge, as root); the tests
that need it skip with one line where it cannot start.

The reading of Slurm's variables is tested on its own first, with the
environments Slurm gives tasks of larger jobs (several nodes, cyclic
placement), which one machine cannot make."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cifar10_toolkit import cluster
from cifar10_toolkit import errors
from cifar10_toolkit import run_control
from cifar10_toolkit import slurm
from conftest import (ROOT, checkpoint_params, free_ports, start_workers,
                      train_args)

import cifar10_multi_gpu_train

# a costly module fixture: its tests run in one process (--dist loadgroup)
pytestmark = pytest.mark.xdist_group('slurm_cluster')


def _step(rank, nodelist='n[9-10]', per_node='2(x2)', **more):
  """The SLURM_* variables of task `rank` of a job step."""
  env = {'SLURM_JOB_ID': '4242', 'SLURM_STEP_ID': '0',
         'SLURM_PROCID': str(rank), 'SLURM_STEP_NUM_TASKS': '4',
         'SLURM_STEP_NODELIST': nodelist,
         'SLURM_STEP_TASKS_PER_NODE': per_node}
  env.update(more)
  return env


def test_ranks_are_placed_where_slurm_placed_them(monkeypatch):
  """Block (the default): n9 holds ranks 0 and 1; TensorFlow's
  SlurmClusterResolver sorts the names and puts rank 0 on n10."""
  base = slurm.PORT_FLOOR + slurm.PORTS_PER_JOB * (4242 % slurm.PORT_SLOTS)
  step = slurm.read(_step(2, SLURMD_NODENAME='n10', SLURM_LOCALID='0'))
  assert step.spec == {'worker': ['n9:%d' % base, 'n9:%d' % (base + 1),
                                  'n10:%d' % base, 'n10:%d' % (base + 1)]}
  assert (step.rank, step.local, step.tasks_here) == (2, 0, 2)
  for name, value in _step(0).items():
    monkeypatch.setenv(name, value)
  import tensorflow as tf
  theirs = tf.distribute.cluster_resolver.SlurmClusterResolver(
      port_base=base, gpus_per_node=2, gpus_per_task=1, auto_set_gpu=False)
  assert theirs.cluster_spec().as_dict()['worker'][0] == 'n10:%d' % base
  cyclic = slurm.read(_step(1, SLURM_DISTRIBUTION='cyclic',
                            SLURMD_NODENAME='n10', SLURM_LOCALID='0'), 2000)
  assert cyclic.spec == {'worker': ['n9:2000', 'n10:2000', 'n9:2001',
                                    'n10:2001']}


def test_jobs_on_one_node_get_their_own_ports():
  bases = {slurm.read(_step(0, SLURM_JOB_ID=str(j))).spec['worker'][0]
           for j in range(1000, 1000 + slurm.PORT_SLOTS)}
  assert len(bases) == slurm.PORT_SLOTS
  assert all(slurm.PORT_FLOOR <= int(b.split(':')[1]) < 32768 for b in bases)


@pytest.mark.parametrize('env, says', [
    ({}, 'not a task of a Slurm job step (no SLURM_STEP_ID: launch it with '
     'srun'),
    (_step(0, per_node='4'), 'the SLURM_* values disagree: '
     'SLURM_STEP_NODELIST names 2 node(s), SLURM_STEP_TASKS_PER_NODE 1'),
    (_step(0, per_node='3,2'), 'the SLURM_* values disagree: '
     'SLURM_STEP_TASKS_PER_NODE makes 5 task(s), SLURM_STEP_NUM_TASKS 4'),
    (_step(3, SLURMD_NODENAME='n9'), 'the SLURM_* values disagree: rank 3 '
     'would be task 1 on n10, but SLURMD_NODENAME=n9 SLURM_LOCALID=(unset)'),
    (_step(0, SLURM_DISTRIBUTION='plane=2'), 'SLURM_DISTRIBUTION=plane=2: '
     'only block (the default) and cyclic placements are read'),
    (_step(0, SLURM_STEP_NODELIST='n[9-'), 'Invalid hostlist format'),
])
def test_what_slurm_says_wrong_is_one_flag_error(env, says):
  with pytest.raises(errors.FlagError, match=re.escape(says)):
    slurm.read(env)
  with pytest.raises(errors.FlagError, match='--port_base 65535: with 2 '
                     'task'):
    slurm.read(_step(0), 65535)


def test_auto_takes_tf_config_inside_a_step_with_a_note(monkeypatch, capsys):
  monkeypatch.setenv('TF_CONFIG', json.dumps({
      'cluster': {'worker': ['a:1', 'b:1']},
      'task': {'type': 'worker', 'index': 1}}))
  for name, value in _step(0).items():
    monkeypatch.setenv(name, value)
  found = cluster.find('auto')
  assert (found.source, found.index, found.spec) == (
      'tf_config', 1, {'worker': ['a:1', 'b:1']})
  assert capsys.readouterr().out == (
      "Note: TF_CONFIG is set inside a Slurm job step: the cluster is "
      "TF_CONFIG's (--cluster slurm to take Slurm's)\n")
  assert cluster.find('slurm', 3000).spec['worker'][0] == 'n9:3000'


def test_a_step_of_one_task_is_a_cluster_of_one_with_a_note(monkeypatch,
                                                            capsys):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  for name, value in _step(0, nodelist='vm', per_node='1',
                           SLURM_STEP_NUM_TASKS='1').items():
    monkeypatch.setenv(name, value)
  found = cluster.find('auto', 5000)
  assert (found.spec, found.is_chief) == ({'worker': ['vm:5000']}, True)
  assert capsys.readouterr().out == (
      'Note: this Slurm job step has one task: a cluster of one worker '
      '(srun -n N for N workers)\n')


def test_cluster_slurm_outside_a_step_is_a_flag_error(monkeypatch, capsys):
  for name in list(os.environ):
    if name.startswith('SLURM'):
      monkeypatch.delenv(name)
  status = run_control.run_main(cifar10_multi_gpu_train.main,
                                ['--cluster', 'slurm'])
  assert status == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.endswith(
      ': error: --cluster slurm: not a task of a Slurm job step (no '
      'SLURM_STEP_ID: launch it with srun, also inside an sbatch script)')
  status = run_control.run_main(cifar10_multi_gpu_train.main, [
      '--cluster', 'slurm', '--strategy', 'mirrored'])
  assert status == 2 and capsys.readouterr().err.strip().endswith(
      '--cluster needs --strategy multi_worker')


# --- a real Slurm cluster ---------------------------------------------------

@pytest.fixture(scope='module')
def slurm_env(tmp_path_factory):
  """The environment of a started one-node Slurm cluster; stopped after."""
  state = str(tmp_path_factory.mktemp('slurm'))
  tool = os.path.join(ROOT, 'tools', 'local_slurm.sh')
  proc = subprocess.run(['bash', tool, 'start', state], capture_output=True,
                        text=True, timeout=120)
  if proc.returncode == 3:
    pytest.skip(proc.stderr.strip().splitlines()[-1])
  try:
    assert proc.returncode == 0, proc.stderr
    yield dict(os.environ, SLURM_CONF=os.path.join(state, 'slurm.conf'),
               PYTHONUNBUFFERED='1')
  finally:
    subprocess.run(['bash', tool, 'stop', state], timeout=120)
    left = subprocess.run(['pgrep', '-f', state], capture_output=True,
                          text=True).stdout.split()
    assert not left, 'daemons left: %s' % left


def _srun(env, data, d, *extra):
  return subprocess.Popen(
      ['srun', '-N1', '-n2', '-J', 'cifar10-test', sys.executable,
       'cifar10_multi_gpu_train.py', '--cluster', 'slurm'] +
      train_args(data, d) + ['--batch_size', '16', '--steps_per_loop', '5',
                             '--log_frequency', '5'] + list(extra),
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _task_pid(d, rank):
  """The pid of the task of this run's job step with SLURM_PROCID rank."""
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open('/proc/%s/cmdline' % pid, 'rb') as f:
        cmdline = f.read()
      with open('/proc/%s/environ' % pid, 'rb') as f:
        environ = f.read().split(b'\0')
    except OSError:
      continue
    if d.encode() in cmdline and b'SLURM_PROCID=%d' % rank in environ:
      return int(pid)
  return None


@pytest.mark.slow
def test_srun_trains_as_tf_config_does(slurm_env, shared_bin_dir, tmp_path):
  """srun -N1 -n2: both tasks train, the chief's checkpoint holds the same
  weights as a TF_CONFIG run of the same flags and seed."""
  d = str(tmp_path / 'slurm')
  proc = _srun(slurm_env, shared_bin_dir, d, '--max_steps', '10')
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, out
  assert out.count('2 replica(s) x batch 16') == 2, out
  assert 'saved checkpoint %s/ckpt-10 at step 10' % d in out
  assert 'saved checkpoint of this worker at step 10' in out
  other = str(tmp_path / 'tf_config')
  procs = start_workers(shared_bin_dir, other, 10, free_ports(2))
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  ours = checkpoint_params(os.path.join(d, 'ckpt-10'))
  theirs = checkpoint_params(os.path.join(other, 'ckpt-10'))
  for a, b in zip(ours, theirs):
    assert sorted(a) == sorted(b)
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_scancel_saves_and_the_same_srun_resumes_then_a_lost_task_is_named(
    slurm_env, shared_bin_dir, tmp_path):
  """scancel: Slurm's SIGTERM, KillWait (30 s) before SIGKILL; both tasks
  save and stop. The same srun command resumes; a task killed with
  SIGKILL then ends the other with the line that names it."""
  d = str(tmp_path / 't')
  args = ('--max_steps', '100000', '--save_checkpoint_secs', '0.000001')
  proc = _srun(slurm_env, shared_bin_dir, d, *args)
  try:
    for line in proc.stdout:
      if 'step 10, loss' in line:
        break
    began = time.monotonic()
    subprocess.run(['scancel', '-n', 'cifar10-test'], env=slurm_env,
                   check=True, timeout=60)
    out = proc.communicate(timeout=120)[0]
  finally:
    proc.kill()
  assert time.monotonic() - began < 30  # before KillWait's SIGKILL
  assert out.count('caught SIGTERM') == 2, out
  saved = [int(s) for s in re.findall(
      r'saved checkpoint %s/ckpt-(\d+) at step' % re.escape(d), out)]
  assert saved and saved[-1] >= 10, out
  proc = _srun(slurm_env, shared_bin_dir, d, *args)
  try:
    for line in proc.stdout:
      if 'Resuming from %s/ckpt-%d' % (d, saved[-1]) in line:
        break
    for line in proc.stdout:
      if 'loss' in line:
        break
    pid = _task_pid(d, 1)
    assert pid
    os.kill(pid, signal.SIGKILL)
    out = proc.communicate(timeout=240)[0]
  finally:
    proc.kill()
  assert proc.returncode != 0
  assert re.search(r'^cifar10_multi_gpu_train\.py: error: the cluster lost '
                   r'worker 1 during training \(\w+Error[^)]*\); the last '
                   r'checkpoint is %s/ckpt-\d+: restart every task to resume '
                   r'from it$' % re.escape(d), out, re.M), out
