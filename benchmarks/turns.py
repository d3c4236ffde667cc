"""Timing in turns: each configuration in a child process of its own, all
alive at once, each timed in its turn, round after round (benchmark.py).

  paired(data_dir, plan, plan_flags)   the parent: figures and rounds
  serve(key, data_dir, plan)           a child: one configuration
"""

import os
import subprocess
import sys
import time

import tensorflow as tf

import cifar10_input
from benchmarks import peers
from benchmarks.measures import (BATCH_SIZE, ROOT, default_config, rate,
                                 set_threads, train_runner)
from cifar10_toolkit import hardware

# A child of the benchmark (run from the repository's root)
BENCHMARK = [sys.executable, '-m', 'benchmarks.benchmark']
TORCH_PEER = os.path.join(ROOT, 'benchmarks', 'torch_peer.py')


def torch_python(given):
  """The interpreter that runs the PyTorch row: given (--torch_python),
  else $CIFAR10_TORCH_PYTHON, else this one if it imports torch; None (and
  why, for the one line that says the row is skipped) when there is none.

  Returns:
    (path or None, reason or None).
  """
  path = given or os.environ.get('CIFAR10_TORCH_PYTHON')
  if not path:
    try:
      import importlib.util
      if importlib.util.find_spec('torch'):
        return sys.executable, None
    except (ImportError, ValueError):
      pass
    return None, ('no PyTorch here (give an interpreter that has it with '
                  '--torch_python or $CIFAR10_TORCH_PYTHON)')
  try:
    subprocess.run([path, '-c', 'import torch'], check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  except (OSError, subprocess.SubprocessError):
    return None, '%s cannot import torch' % path
  return path, None


def paired_keys():
  """The configurations timed in turns: the toolkit's default training (and
  the same in one slice, where the default has several), and the Keras ones
  (mixed_bfloat16 where the CPU has native bfloat16 or a GPU is present)."""
  keys = ['train_default', 'keras']
  if default_config().slices > 1:
    keys.insert(1, 'train_one_slice')
  if tf.config.list_physical_devices('GPU') or hardware.native_bf16_cpu():
    keys += ['keras_bf16', 'keras_bf16_spe20']
  return keys


def keras_keys():
  """The Keras configurations of paired_keys(), as benchmarks/ab.py times
  them by default."""
  return [k for k in paired_keys() if k in peers.KERAS]


def say(word):
  """A child's reply to the parent, on its own line of stdout."""
  print('@turn %s' % word, flush=True)


def told_to_run():
  """Blocks until the parent says 'run' (True) or stops the child (False)."""
  return sys.stdin.readline().strip() == 'run'


def serve(key, data_dir, plan):
  """A child that measures one configuration in turns with others (paired).

  It warms up, says 'ready', then for each 'run' read from stdin trains
  plan['steps'] steps and says how many seconds they took, until told to
  stop; idle in between. The toolkit's default runs with the thread pools
  and slices cifar10_train.py sets; Keras (the tutorial's network written as
  a skilled user would: tf.keras layers, SGD 0.1, model.fit on the same
  tf.data input) with TensorFlow's default pools (serve_keras).
  """
  if key.startswith('train'):  # default, or in one slice (default pools)
    defaults = default_config()
    slices = defaults.slices if key == 'train_default' else 1
    set_threads(slices)
    serve_runner(train_runner(data_dir, plan, defaults.precision,
                              defaults.data_on_device,
                              defaults.steps_per_loop, slices=slices))
    return
  policy, steps_per_execution = peers.KERAS[key]
  tf.keras.mixed_precision.set_global_policy(policy)
  serve_keras(peers.keras_convnet(steps_per_execution),
              cifar10_input.distorted_inputs(data_dir, BATCH_SIZE, seed=1),
              plan)


def serve_runner(run):
  """Says 'ready', then times run() at each 'run' until told to stop."""
  say('ready')
  while told_to_run():
    t = time.perf_counter()
    run()
    say(time.perf_counter() - t)


def serve_keras(model, dataset, plan):
  """The same for a compiled Keras model: one model.fit call of epochs of
  plan['steps'] steps on dataset (the first, which traces, is the warm-up),
  blocked between epochs by a callback."""

  class Turns(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      took = time.perf_counter() - self.start
      say(took if epoch else 'ready')
      if not told_to_run():
        self.model.stop_training = True

  model.fit(dataset, steps_per_epoch=plan['steps'], epochs=10**9, verbose=0,
            callbacks=[Turns()])


def heard(key, child):
  """The next reply of a serving child."""
  for line in child.stdout:
    if line.startswith('@turn '):
      return line.split()[1]
  raise RuntimeError('benchmark child %s ended (exit status %s)'
                     % (key, child.wait()))


def paired(data_dir, plan, plan_flags, commands=None, torch_python=None):
  """The default training and the Keras configurations, timed in turns.

  Each configuration runs in a child process of its own (its own thread
  pools and precision policy), all alive at once and idle but for their
  turn: each round times plan['steps'] steps of every one, in an order that
  rotates from round to round, so that this machine's drift (over 10% within
  minutes) falls on all of them alike. Each Keras configuration has
  plan['keras_processes'] processes (Keras on 2 cores differs from process
  to process) and its figure is the best of their medians.

  Args:
    commands: optional list of (key, argv) of the children to time instead
      (argv: a `benchmark.py --serve KEY` of some checkout; benchmarks/ab.py).
    torch_python: optional interpreter with PyTorch: the 'torch' row
      (torch_peer.py) is timed in turns with the others.

  Returns:
    figures: {key: rate(...) plus 'processes', the medians of its
      processes}, and rounds: per round, {key: examples/sec}.
  """
  if commands is None:
    commands = [(key, BENCHMARK + ['--serve', key])
                for key in paired_keys()
                for _ in range(plan['keras_processes'] if key in peers.KERAS
                               else 1)]
    if torch_python:
      commands.append(('torch', [torch_python, TORCH_PEER, '--steps',
                                 str(plan['steps']), '--warmup',
                                 str(plan['warmup'])]))
  children = []
  try:
    for key, argv in commands:
      child = subprocess.Popen(
          argv + ['--data_dir', os.path.abspath(data_dir)] + plan_flags,
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
      children.append((key, child))
      heard(key, child)  # warm-ups one at a time
    times = [[] for _ in children]
    for r in range(plan['turns']):
      for i in range(len(children)):
        i = (i + r) % len(children)
        key, child = children[i]
        time.sleep(0.2)  # the one before settles (its input threads)
        child.stdin.write('run\n')
        child.stdin.flush()
        times[i].append(float(heard(key, child)))
  finally:
    for _, child in children:
      try:
        child.stdin.close()
      except OSError:
        pass
    for _, child in children:
      child.wait()
  examples = plan['steps'] * BATCH_SIZE
  figures, rounds = {}, [{} for _ in range(plan['turns'])]
  for (key, _), t in zip(children, times):
    f = rate(t, examples)
    for r, x in zip(rounds, f['repeats']):
      r[key] = max(r.get(key, 0), x)
    medians = figures.get(key, {}).get('processes', []) + [f['median']]
    if key in figures and figures[key]['median'] >= f['median']:
      f = figures[key]
    figures[key] = dict(f, processes=medians)
  return figures, rounds
