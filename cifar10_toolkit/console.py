"""The console's lines: the tutorial's step line, each with its own step's
time, the time-to-go line, the closing line.

  StepClock(step, global_batch, log_frequency)   the lines of a training run
  first_logged(step, log_frequency)              a call's first line's step
  now(seconds)                                   the tutorial's time stamp
  progress_line(...), duration_text(seconds)     how long a run has to go
"""

import datetime
import sys
import time

FIRST_PROGRESS_SECS = 20  # the first 'how long to go' line, after the start



class StepClock:
  """Console lines in the tutorial's format, each with its own step's time.

  Every log_frequency-th step gets a line stamped with the time its loss was
  ready (read inside the graph loop), its examples/sec measured since the
  previous line. A line whose interval includes start-up (tracing and the
  first call of a training function) says so instead of passing it off as a
  slow step. Also keeps the run's totals for the closing line.
  """

  def __init__(self, step, global_batch, log_frequency):
    self.global_batch, self.log_frequency = global_batch, log_frequency
    self.last_step, self.last_time = step, time.monotonic()
    self.first_step, self.began = step, self.last_time
    self.startup = True  # the interval in progress includes start-up
    self.warm = None  # (step, time) once both functions have run once
    self.said = None  # (step, time) of the last progress line
    self.step_secs = None  # a step's seconds, from the last call

  def log(self, first_step, losses, times, ticks, first_call=False,
          note=None):
    """Prints the lines of steps first_step + 1 ... first_step + len(losses).

    times: when each step's loss was ready; needed on the steps that get a
    line, NaN allowed elsewhere (the graph loop stamps only those).
    ticks: the same on time.monotonic()'s clock, which a clock set back or
      forward does not move: the speeds are measured on it.

    first_call: the call that ran them was a training function's first (it
    traced and compiled before running).
    note: optional (time, line) printed among them in time order (a
    signal caught while they ran).
    """
    self.startup = self.startup or first_call
    for i, loss in enumerate(losses):
      step = first_step + i + 1
      if step % self.log_frequency:
        continue
      if note and times[i] > note[0]:
        print(note[1])
        note = None
      duration = max(ticks[i] - self.last_time, 1e-9)
      steps = step - self.last_step
      print('%s: step %d, loss = %.2f (%.1f examples/sec; %.3f sec/batch%s)' %
            (now(times[i]), step, loss,
             steps * self.global_batch / duration, duration / steps,
             '; includes start-up' if self.startup else ''))
      self.last_step, self.last_time = step, ticks[i]
      self.startup = False
    if note:
      print(note[1])
    sys.stdout.flush()

  def call_took(self, steps, seconds):
    """A call of `steps` steps (not a first: no tracing) took `seconds`."""
    self.step_secs = seconds / max(steps, 1)

  def steps_within(self, seconds):
    """How many steps take about `seconds` at the speed of the last call
    (at least 1; no bound before the speed is known)."""
    if not self.step_secs:
      return sys.maxsize
    return max(1, int(seconds / self.step_secs))

  def progress(self, step, max_steps, interval):
    """A line saying how long the run has to go, when one is due, or None.

    The first comes FIRST_PROGRESS_SECS after start-up (set warm first),
    then one every `interval` seconds, at the speed since the previous one.
    """
    since = self.said or self.warm
    if since is None or step >= max_steps or step == since[0]:
      return None
    due = interval if self.said else min(interval, FIRST_PROGRESS_SECS)
    if time.monotonic() - since[1] < due:
      return None
    self.said = (step, time.monotonic())
    return progress_line(step, max_steps, self.speed(since, step),
                                   self.global_batch)

  def speed(self, since, step):
    """Examples/sec from since = (step, time) to step, now."""
    return (step - since[0]) * self.global_batch / max(
        time.monotonic() - since[1], 1e-9)

  def summary(self, step):
    """The closing line: steps run, time taken, average speed."""
    seconds = time.monotonic() - self.began
    return '%s: trained %d steps (%d to %d) in %s: %.0f examples/sec%s' % (
        now(), step - self.first_step, self.first_step, step,
        duration_text(seconds),
        (step - self.first_step) * self.global_batch / max(seconds, 1e-9),
        ', %.0f after start-up' % self.speed(self.warm, step)
        if self.warm and step > self.warm[0] else '')


def first_logged(step, log_frequency):
  """Which step of a call from `step` (0: the first) prints the first line."""
  return (-step - 1) % log_frequency


def now(seconds=None):
  """The tutorial's console timestamp: of `seconds` since the epoch, or now."""
  return datetime.datetime.fromtimestamp(
      time.time() if seconds is None else seconds)


def duration_text(seconds):
  """'2 h 05 min' or '3 min 07 s'."""
  hours, rest = divmod(int(seconds), 3600)
  return ('%d h %02d min' % (hours, rest // 60) if hours else
          '%d min %02d s' % divmod(rest, 60))


def progress_line(step, max_steps, examples_per_sec, examples_per_step):
  """'N of M steps (P%), about T to go at the current speed'."""
  left = (max_steps - step) * examples_per_step / max(examples_per_sec, 1e-9)
  return '%s: step %d of %d (%.1f%%), about %s to go at %.0f examples/sec' % (
      now(), step, max_steps, 100.0 * step / max_steps, duration_text(left),
      examples_per_sec)
