"""The benchmark's measurements, each in this process: the toolkit's rows,
evaluation, the fully connected model, the input pipeline, peak memory
(benchmark.py runs them, and says how).

  default_config(**flags)       what cifar10_train.py resolves here
  train_runner(...), bench_*    one row's figure: rate() of timed repeats
  measure(phase, data_dir, plan)   the rows of one child process
"""

import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

import cifar10_input  # noqa: E402
import convnet  # noqa: E402
import data_sets  # noqa: E402
import data_helpers  # noqa: E402
import two_layer_fc  # noqa: E402
from cifar10_toolkit import cli  # noqa: E402
from cifar10_toolkit import config  # noqa: E402
from cifar10_toolkit import console  # noqa: E402
from cifar10_toolkit import device_input  # noqa: E402
from cifar10_toolkit import evaluation  # noqa: E402
from cifar10_toolkit import hardware  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import train_loop  # noqa: E402

BATCH_SIZE = 128
# Per mode: timed repeats, steps per repeat, warm-up steps; rounds of the
# configurations timed in turns, and processes per Keras configuration.
PLAN = {'full': dict(repeats=5, steps=100, warmup=20, turns=7,
                     keras_processes=2, fc_steps=200, memory_steps=400,
                     eval_examples=10000, overhead_steps=4000,
                     overhead_steps_1=1500),
        'quick': dict(repeats=3, steps=20, warmup=5, turns=3,
                      keras_processes=1, fc_steps=60, memory_steps=60,
                      eval_examples=2000, overhead_steps=600,
                      overhead_steps_1=200),
        # --smoke: every row measured and printed, with the fewest steps
        # and rounds (what the tests run); its figures say nothing about speed
        'smoke': dict(repeats=2, steps=4, warmup=2, turns=2,
                      keras_processes=1, fc_steps=10, memory_steps=20,
                      eval_examples=500, overhead_steps=250,
                      overhead_steps_1=20)}
OVERHEAD_BATCH = 2
CEILING_N = 2048  # the ceiling's matmul: N x N x N
PHASES = ('sliced', 'default')


def timed_repeats(run, repeats, warmup):
  """Calls run(warmup) once untimed, then times run() repeats times."""
  run(warmup)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
  return times


def rate(times, items):
  per = [items / t for t in times]
  return {'median': statistics.median(per), 'repeats': per}


def bench_pipeline(data_dir, plan):
  it = iter(cifar10_input.distorted_inputs(data_dir, BATCH_SIZE, seed=1))
  n = plan['steps'] * 4

  def run(steps=n):
    for _ in range(steps):
      next(it)
  return rate(timed_repeats(run, plan['repeats'], plan['warmup']),
              n * BATCH_SIZE)


TRAIN_FLAGS = flags.FlagValues()
cli.define_training_flags(TRAIN_FLAGS, (data_sets.NAMES, data_sets.get))


def set_threads(slices):
  """The thread pools cifar10_train.py sets for `slices` slices; an error
  if TensorFlow has started already (the figures would mean another
  configuration)."""
  if not hardware.set_threads(hardware.describe(), slices):
    raise RuntimeError('the benchmark could not set TensorFlow\'s thread '
                       'pools: its runtime started first')


def default_config(model_lib=convnet, **flag_values):
  """The config.TrainConfig cifar10_train.py resolves here from its
  defaults for model_lib (--model), with the flags given as name=value."""
  cli.parse(TRAIN_FLAGS, ['--%s=%s' % kv for kv in flag_values.items()])
  return config.resolve(TRAIN_FLAGS, hardware.describe(), 1,
                        data_sets.CIFAR10, model_lib, cifar10_input)


def _feed(data_dir, batch_size, on_device, strategy, input_lib=cifar10_input):
  """(feed, iterator) as train_loop.train makes them, seed 1."""
  return device_input.make_feed(data_dir, batch_size, 1, strategy, on_device,
                                data_sets.CIFAR10, input_lib)


def train_runner(data_dir, plan, dtype, on_device=True,
                 steps_per_loop=cli.DEFAULT_STEPS_PER_LOOP,
                 jit_compile=False, slices=1, model_lib=convnet):
  """run(steps) training model_lib's model (the convnet) through
  cifar10_train's loop at batch 128 (losses read back after each call, as
  the loop's NaN check does), both loop lengths traced."""
  strategy = tf.distribute.get_strategy()
  run_config = default_config(model_lib)
  model = config.new_model(model_lib, run_config.input_lib,
                           data_sets.CIFAR10, 1)
  state = model_lib.TrainState(model, compute_dtype=dtype)
  feed, iterator = _feed(data_dir, BATCH_SIZE, on_device, strategy,
                         run_config.input_lib)
  loop, _ = train_loop.make_train_loop(strategy, model_lib, model, state,
                                       BATCH_SIZE, feed, jit_compile, slices)
  votes = run_control.stop_votes(0, False)
  every = default_config().log_frequency  # the steps stamped, as in train()

  def run(steps=plan['steps']):
    done = 0
    while done < steps:
      n = min(steps_per_loop, steps - done)
      losses, _, _ = loop(iterator, tf.constant(n), votes,
                          tf.constant(console.first_logged(done, every)),
                          tf.constant(every))
      losses.numpy()
      done += n
  run(min(steps_per_loop, plan['warmup']))
  return run


def bench_train(data_dir, plan, *args, **kwargs):
  """Examples/sec of cifar10_train's loop at batch 128 (see train_runner)."""
  run = train_runner(data_dir, plan, *args, **kwargs)
  return rate(timed_repeats(run, plan['repeats'], plan['warmup']),
              plan['steps'] * BATCH_SIZE)


def bench_overhead(data_dir, plan, steps_per_loop, steps):
  """Host overhead per step (ms) at batch 2.

  train_loop.train's real loop (console lines, NaN checks, signal and save
  checks, one call per steps_per_loop steps; summaries and checkpoints set
  beyond the run) minus the same training loop run as one call of all the
  steps (batches made on the device from the records in memory, as in the
  real loop): what is left is the host's work. Each repeat times a real run
  and then its reference, and the figure is the median of those paired
  differences (these machines drift by more than the overhead between
  measurements a minute apart). Also timed: the training step alone on one
  fixed batch, so that the cost of making the batches inside the graph is
  shown too (device work, not host overhead).
  """
  strategy = tf.distribute.get_strategy()
  model = convnet.ConvNet(1)
  state = convnet.TrainState(model,
                             compute_dtype=default_config().precision)
  feed, _ = _feed(data_dir, OVERHEAD_BATCH, True, strategy)
  loop, _ = train_loop.make_train_loop(strategy, convnet, model, state,
                                       OVERHEAD_BATCH, feed)
  votes = run_control.stop_votes(0, False)
  images, labels = feed.replica_batch(feed.next_batch(0))

  @tf.function
  def fixed_batch(n):
    for _ in tf.range(n):
      strategy.run(convnet.training,
                   args=(model, state, images, labels, OVERHEAD_BATCH))
    return state.global_step.read_value()

  def per_step(call, n):
    t = time.perf_counter()
    call(tf.constant(n))
    return (time.perf_counter() - t) / n

  one_call = lambda n: loop(None, n, votes)[0].numpy()
  fixed = lambda n: fixed_batch(n).numpy()
  real, ref, fix = [], [], []
  for repeat in range(plan['repeats']):
    with tempfile.TemporaryDirectory() as train_dir:
      run = default_config(
          train_dir=train_dir, data_dir=data_dir, batch_size=OVERHEAD_BATCH,
          max_steps=steps, seed=1, steps_per_loop=steps_per_loop,
          data_on_device=True, summary_steps=10**9,
          save_checkpoint_secs=10**9)
      calls = []  # (step, time) of the calls once both functions have run
      on_call = lambda step, warm: warm and calls.append((step, time.time()))
      with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        train_loop.train(run, on_call=on_call)
    n = calls[-1][0] - calls[0][0]
    if not repeat:  # trace the references
      one_call(tf.constant(n))
      fixed(tf.constant(n))
    real.append((calls[-1][1] - calls[0][1]) / n)
    ref.append(per_step(one_call, n))
    fix.append(per_step(fixed, n))
  ms = lambda xs: [1000 * x for x in xs]
  return {'median': statistics.median(ms([a - b for a, b in zip(real, ref)])),
          'loop_ms_per_step': ms(real), 'one_call_ms_per_step': ms(ref),
          'fixed_batch_ms_per_step': ms(fix),
          'batches_in_graph_ms': statistics.median(
              ms([a - b for a, b in zip(ref, fix)])),
          'steps_per_loop': steps_per_loop, 'steps': n}


def flops_per_example(image_size=24):
  """The convnet's training FLOPs per example: forward multiply-adds of
  convnet.LAYERS (a convolution's at every pixel of its output, of the side
  that convnet.NETWORK's pools leave of the crop), x 2 for FLOPs, x 3 for
  forward and backward (the input and the weights' gradients). LRN, pools
  and the update are left out."""
  macs, side = 0, image_size
  for name in convnet.NETWORK:
    if name.startswith('pool'):
      side = -(-side // 2)
    elif name in convnet.LAYERS:
      shape = convnet.LAYERS[name][0]
      macs += math.prod(shape) * (side * side if len(shape) == 4 else 1)
  return 2 * 3 * macs


def bench_ceiling(plan):
  """The machine's matmul ceiling: a 2048^3 matmul in bfloat16 (float32
  where the CPU has no native bfloat16 and there is no GPU) on TensorFlow's
  default pools (all cores), TFLOP/s."""
  native = (tf.config.list_physical_devices('GPU') or
            hardware.native_bf16_cpu())
  dtype = tf.bfloat16 if native else tf.float32
  a, b = (tf.cast(tf.random.stateless_normal([CEILING_N] * 2, [1, i]), dtype)
          for i in range(2))
  product = tf.function(lambda a, b: tf.matmul(a, b)[0, 0], autograph=False)
  n = max(2, plan['repeats'])

  def run(calls=n):
    for _ in range(calls):
      product(a, b).numpy()
  times = timed_repeats(run, plan['repeats'], 2)
  return dict(rate(times, 2 * CEILING_N ** 3 * n / 1e12), dtype=dtype.name,
              n=CEILING_N)


def bench_eval(data_dir, plan):
  ev = evaluation.Evaluator(data_dir, 'test', plan['eval_examples'],
                            data_sets.CIFAR10, convnet, cifar10_input)
  seen = ev.evaluate()[2]  # also the warm-up
  return rate(timed_repeats(lambda *_: ev.evaluate(), plan['repeats'], 0),
              seen)


def bench_fc(data_dir, plan):
  data = data_helpers.load_data(data_dir)
  model = two_layer_fc.TwoLayerFC(120, seed=1)
  state = two_layer_fc.TrainState()
  step = tf.function(lambda x, y: two_layer_fc.training(
      model, state, x, y, 0.001, 0.1)[0])
  batches = data_helpers.gen_batch((data['images_train'],
                                    data['labels_train']), 400, 10**9, seed=1)

  def run(steps=plan['fc_steps']):
    for _ in range(steps):
      float(step(*next(batches)))
  return rate(timed_repeats(run, plan['repeats'], plan['warmup']),
              plan['fc_steps'])


def bench_memory(data_dir, plan):
  """Peak RSS (MB) of a cifar10_train.py child process."""
  with tempfile.TemporaryDirectory() as train_dir:
    cmd = [sys.executable, os.path.join(ROOT, 'cifar10_train.py'),
           '--train_dir', train_dir, '--data_dir', data_dir, '--max_steps',
           str(plan['memory_steps']), '--seed', '1', '--log_frequency', '1000']
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # this child's own usage (RUSAGE_CHILDREN is the largest of every child
    # this process has waited for: the benchmark's Keras children too)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
      raise subprocess.CalledProcessError(code, cmd)
  return usage.ru_maxrss / 1024.0


def machine():
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(l.split(':', 1)[1].strip() for l in f
                 if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  gpus = [
      tf.config.experimental.get_device_details(g).get('device_name', g.name)
      for g in tf.config.list_physical_devices('GPU')
  ]
  return {'cpu': cpu, 'cores': os.cpu_count(), 'gpus': gpus,
          'tensorflow': tf.__version__, 'python': platform.python_version()}


def measure(phase, data_dir, plan):
  """The figures of one phase, measured in this process (after paired()).

  'sliced': TensorFlow's thread pools as cifar10_train.py sets them for its
  defaults (set_threads: one thread per kernel and one slice per core on a
  CPU), and the toolkit's training rows with one choice changed.
  'default': TensorFlow's default thread pools, which the evaluator and a
  one-slice run use: the earlier-default and XLA rows, host overhead (batch
  2 is one slice), evaluation, the fully connected model, the input
  pipeline.
  """
  defaults = default_config()
  dtype = tf.as_dtype(defaults.precision)
  n = defaults.steps_per_loop
  on = defaults.data_on_device
  slices = defaults.slices
  gpu = bool(tf.config.list_physical_devices('GPU'))
  fig = {}
  if phase == 'sliced':
    set_threads(slices)
    fig['train_loop1'] = bench_train(data_dir, plan, dtype, on, 1,
                                     slices=slices)
    fig['train_tfdata' if on else 'train_device'] = bench_train(
        data_dir, plan, dtype, not on, n, slices=slices)
    if dtype != tf.float32:
      fig['train'] = bench_train(data_dir, plan, tf.float32, on, n,
                                 slices=slices)
    if gpu:
      fig['train_fp16'] = bench_train(data_dir, plan, tf.float16, on, n,
                                      slices=slices)
    return fig
  fig['train_previous'] = bench_train(data_dir, plan, dtype, False, 1)
  fig['train_xla'] = bench_train(data_dir, plan, tf.float32, on, n,
                                 jit_compile=True)
  fig['overhead_ms'] = bench_overhead(data_dir, plan, n,
                                      plan['overhead_steps'])
  fig['overhead_ms_loop1'] = bench_overhead(data_dir, plan, 1,
                                            plan['overhead_steps_1'])
  fig['eval'] = bench_eval(data_dir, plan)
  fig['fc_steps_per_sec'] = bench_fc(data_dir, plan)
  fig['pipeline'] = bench_pipeline(data_dir, plan)
  fig['ceiling_tflops'] = bench_ceiling(plan)
  fig['slices'] = slices
  return fig
