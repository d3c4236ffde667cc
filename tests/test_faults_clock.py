"""A wall clock that steps (NTP, a clock set by hand): intervals are
measured on time.monotonic(), which never steps; the wall clock is only for
the stamps a user reads.

The step is injected: the toolkit's wall clock (its modules' time.time and
TensorFlow's tf.timestamp, which the graph loop stamps the step lines with)
is set back an hour at a chosen moment, as a real step would set both.
(libfaketime, which fakes the process's clocks, cannot step the wall clock
alone: with the monotonic clock left real, Python's time.sleep fails.)"""

import os
import re
import time

import numpy as np
import pytest
import tensorflow as tf

import cifar10_eval
import cifar10_train
from cifar10_toolkit import checkpoints
from cifar10_toolkit import console
from cifar10_toolkit import train_loop
from conftest import train_args

HOUR = 3600.0


class _SteppedClock:
  """The time module, with time() set back `by` seconds from its second
  call once armed (and tf.timestamp with it, through `graph`, a
  tf.Variable)."""

  def __init__(self, armed, by=-HOUR):
    self.armed, self.by, self.calls = armed, by, 0
    self.offset, self.graph = 0.0, tf.Variable(0.0, dtype=tf.float64)

  def time(self):
    self.calls += bool(self.armed)
    if self.calls == 2:
      self.offset = self.by
      self.graph.assign(self.by)
    return time.time() + self.offset

  def __getattr__(self, name):
    return getattr(time, name)


@pytest.fixture
def stepped(monkeypatch):
  """stepped(armed): the clock of the toolkit's modules, to step once
  armed (set .armed = True)."""
  def install(armed=False):
    clock = _SteppedClock(armed)
    real = tf.timestamp
    monkeypatch.setattr(tf, 'timestamp',
                        lambda name=None: real(name=name) + clock.graph)
    for module in (train_loop, console, cifar10_eval):
      monkeypatch.setattr(module, 'time', clock)
    return clock
  return install


@pytest.mark.slow
def test_a_clock_set_back_mid_run_neither_stops_saves_nor_skews_speeds(
    shared_bin_dir, tmp_path, stepped, capsys, monkeypatch):
  """Set back an hour after the first interval's save: checkpoints still
  come every --save_checkpoint_secs (they stopped for the hour), and the
  speeds and the closing line stay true (they read 1e11 examples/sec and
  48 h)."""
  clock = stepped()
  save = checkpoints.save_checkpoint

  def save_then_step(*args):
    clock.armed = True
    return save(*args)
  monkeypatch.setattr(checkpoints, 'save_checkpoint', save_then_step)
  d = str(tmp_path / 't')
  began = time.monotonic()
  assert cifar10_train.main(train_args(
      shared_bin_dir, d, '--max_steps', '160', '--log_frequency', '10',
      '--steps_per_loop', '10', '--save_checkpoint_secs', '0.5',
      '--progress_secs', '1')) == 0
  took = time.monotonic() - began
  assert clock.offset == -HOUR and took > 2
  out = capsys.readouterr().out
  _, manager = checkpoints.checkpoint_manager(d)
  assert len(manager.checkpoints) == checkpoints.MAX_CHECKPOINTS_TO_KEEP, out
  speeds = [float(s) for s in re.findall(r'\(([\d.]+) examples/sec', out)]
  assert len(speeds) == 16 and max(speeds) < 1e6, speeds
  closing = re.search(r'trained 160 steps \(0 to 160\) in (\d+) min (\d+) s: '
                      r'(\d+) examples/sec', out)
  assert closing and int(closing[1]) * 60 + int(closing[2]) <= took + 1, out
  assert not re.search(r'\d h \d\d min', out), out  # (an ETA of hours)
  assert 'to go at' in out  # (a progress line, from the second second)


def test_the_evaluator_waits_its_interval_on_a_clock_set_back(stepped,
                                                             tmp_path):
  """cifar10_eval's watch: a new checkpoint is due --eval_interval_secs
  after the last evaluation, whatever the wall clock did meanwhile (set back
  an hour, it waited the hour)."""
  clock = stepped()
  watch = cifar10_eval.Watch(str(tmp_path), 0.5)
  clock.armed = True
  watch.evaluated(None)
  (tmp_path / 'ckpt-1.index').write_text('a new checkpoint')

  class Stop:
    sleep = staticmethod(lambda secs: time.sleep(min(secs, 0.05)))
  began = time.monotonic()
  while not watch.due(Stop):
    assert time.monotonic() - began < 5
  assert 0.3 < time.monotonic() - began < 2


def test_checkpoints_dated_ahead_are_still_rotated(tmp_path, capsys):
  """Saved while the clock ran two days ahead, then the clock came back:
  TensorFlow's CheckpointManager forgets them (ten stayed for good); the
  trainer's resume rewrites the index, and five are kept."""
  d = str(tmp_path)
  v = tf.Variable(1.0)
  ckpt, manager = checkpoints.checkpoint_manager(d, v=v)
  for step in range(1, 6):
    checkpoints.save_checkpoint(manager, step)
  ahead = time.time() + 2 * 86400
  index = os.path.join(d, checkpoints.INDEX_FILE)
  with open(index) as f:
    text = f.read()
  text = re.sub(r'(timestamp: )[\d.]+', lambda m: m[1] + '%.6f' % ahead,
                text)
  with open(index, 'w') as f:
    f.write(text)
  for name in os.listdir(d):
    os.utime(os.path.join(d, name), (ahead, ahead))
  assert checkpoints.resume(ckpt, d, repair=True).endswith('ckpt-5')
  assert re.search(r'Note: index file \S+ is dated 1728\d\d s ahead of this '
                   r"machine's clock", capsys.readouterr().out)
  _, manager = checkpoints.checkpoint_manager(d, v=v)
  for step in range(6, 11):
    checkpoints.save_checkpoint(manager, step)
  kept = sorted(int(n[5:-6]) for n in os.listdir(d) if n.endswith('.index'))
  assert kept == [6, 7, 8, 9, 10]
  assert np.isclose(v.numpy(), 1.0)
