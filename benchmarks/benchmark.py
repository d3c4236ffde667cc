"""Measures the toolkit against a Keras equivalent, in one run on one machine.

    python3 benchmarks/benchmark.py [--quick | --smoke] [--data_dir /tmp/dataset]

Prints a table and writes it as JSON (--json, default
benchmarks/results/benchmark-<date>.json):
  - the distorted training input pipeline alone, examples/sec;
  - convnet training at batch 128 through train_loop.make_train_loop (the
    loop cifar10_train.py runs, the host reading the losses after each call):
    the default configuration (steps_per_loop 100, data on the device, the
    precision and the slices (--slices) cifar10_train picks, with the thread
    pools it sets), and each choice changed alone: one step per call,
    tf.data input, float32, one slice with TensorFlow's default threads; XLA
    (float32, one slice); and the earlier defaults (one step per call from
    tf.data, one slice);
  - host overhead per step at batch 2: a train_loop.train run (its real
    loop: console lines, NaN checks, signal and save checks; summaries and
    checkpoints set beyond the run) minus the same steps run in one call of
    one tf.function, their data already in memory; at the default
    steps_per_loop and at 1; and the cost of making the batches in the graph
    (those steps against the step on one fixed batch);
  - the same convnet written as a skilled user would in Keras (tf.keras
    layers, SGD 0.1, model.fit on the same tf.data input): float32, and
    mixed_bfloat16 (where the CPU has native bfloat16, or a GPU is present;
    LRN in float32, as TensorFlow has no bfloat16 LRN kernel on CPUs) with
    steps_per_execution 1 and 20; the ratio is the toolkit's default over the
    best of them. The default training, its one-slice variant and the Keras
    configurations are timed in turns, round after round, each in a child
    process of its own kept alive throughout (see paired()), so that their
    ratios do not carry this machine's drift; the ratio is also printed for
    each round;
  - evaluation (cifar10_toolkit.evaluation.Evaluator), examples/sec;
  - the fully connected model's training, steps/sec;
  - peak resident memory of a cifar10_train.py run (a child process).
Warm-up (tracing) is excluded; each figure is the median of several timed
repeats. TensorFlow's thread pools are set once per process, so every figure
is measured in a child process: the paired ones first, then two processes
for the rest, one after the other (see measure()).
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

import cifar10_input  # noqa: E402
import cifar10_train  # noqa: E402  (its flags: what its defaults resolve to)
import convnet  # noqa: E402
import data_helpers  # noqa: E402
import two_layer_fc  # noqa: E402
from cifar10_toolkit import cli  # noqa: E402
from cifar10_toolkit import config  # noqa: E402
from cifar10_toolkit import dataset  # noqa: E402
from cifar10_toolkit import device_input  # noqa: E402
from cifar10_toolkit import evaluation  # noqa: E402
from cifar10_toolkit import hardware  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import train_loop  # noqa: E402
from tools import gpu_audit  # noqa: E402
from tools import kernel_audit  # noqa: E402

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
        # --smoke: every row measured and printed, in a minute or two (what
        # the tests run); its figures say nothing about speed
        'smoke': dict(repeats=3, steps=4, warmup=2, turns=3,
                      keras_processes=1, fc_steps=10, memory_steps=20,
                      eval_examples=500, overhead_steps=250,
                      overhead_steps_1=20)}
OVERHEAD_BATCH = 2
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


def default_config(**flag_values):
  """The config.TrainConfig cifar10_train.py resolves here from its
  defaults, with the flags given as name=value."""
  cli.parse(cifar10_train.FLAGS, ['--%s=%s' % kv for kv in
                                  flag_values.items()])
  return config.resolve(cifar10_train.FLAGS, hardware.describe())


def _feed(data_dir, batch_size, on_device, strategy):
  """(feed, iterator) as train_loop.train makes them, seed 1."""
  if on_device:
    return device_input.DeviceInput(data_dir, batch_size, 1, strategy), None
  return device_input.DatasetFeed(), iter(
      strategy.distribute_datasets_from_function(
          lambda ctx: cifar10_input.distorted_inputs(data_dir, batch_size, 1,
                                                     0, ctx)))


def train_runner(data_dir, plan, dtype, on_device=True,
                 steps_per_loop=cli.DEFAULT_STEPS_PER_LOOP,
                 jit_compile=False, slices=1):
  """run(steps) training the convnet through cifar10_train's loop at batch
  128 (losses read back after each call, as the loop's NaN check does),
  both loop lengths traced."""
  strategy = tf.distribute.get_strategy()
  model = convnet.ConvNet(1)
  state = convnet.TrainState(model, compute_dtype=dtype)
  feed, iterator = _feed(data_dir, BATCH_SIZE, on_device, strategy)
  loop, _ = train_loop.make_train_loop(strategy, model, state, BATCH_SIZE,
                                       feed, jit_compile, slices)
  votes = run_control.stop_votes(0, False)

  def run(steps=plan['steps']):
    done = 0
    while done < steps:
      n = min(steps_per_loop, steps - done)
      losses, _, _ = loop(iterator, tf.constant(n), votes)
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
  loop, _ = train_loop.make_train_loop(strategy, model, state,
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


def bench_eval(data_dir, plan):
  ev = evaluation.Evaluator(data_dir, 'test', plan['eval_examples'])
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


def keras_convnet(steps_per_execution=1):
  """The tutorial's network as a skilled user would write it in Keras (under
  whatever mixed-precision policy is set)."""
  k = tf.keras

  def lrn(x):  # TensorFlow has no bfloat16 LRN kernel on CPUs: float32
    y = tf.nn.local_response_normalization(
        tf.cast(x, tf.float32), depth_radius=4, bias=1.0, alpha=0.001 / 9.0,
        beta=0.75)
    return tf.cast(y, x.dtype)
  init = lambda sd: k.initializers.TruncatedNormal(stddev=sd)
  model = k.Sequential([
      k.Input((24, 24, 3)),
      k.layers.Conv2D(64, 5, padding='same', activation='relu',
                      kernel_initializer=init(5e-2)),
      k.layers.MaxPooling2D(3, 2, padding='same'),
      k.layers.Lambda(lrn),
      k.layers.Conv2D(64, 5, padding='same', activation='relu',
                      kernel_initializer=init(5e-2),
                      bias_initializer=k.initializers.Constant(0.1)),
      k.layers.Lambda(lrn),
      k.layers.MaxPooling2D(3, 2, padding='same'),
      k.layers.Flatten(),
      k.layers.Dense(384, activation='relu', kernel_initializer=init(0.04),
                     bias_initializer=k.initializers.Constant(0.1),
                     kernel_regularizer=k.regularizers.l2(0.002)),
      k.layers.Dense(192, activation='relu', kernel_initializer=init(0.04),
                     bias_initializer=k.initializers.Constant(0.1),
                     kernel_regularizer=k.regularizers.l2(0.002)),
      k.layers.Dense(10, kernel_initializer=init(1 / 192.0),
                     dtype='float32'),  # logits in float32 for the loss
  ])
  model.compile(optimizer=k.optimizers.SGD(0.1),
                loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'], steps_per_execution=steps_per_execution)
  return model


KERAS = {'keras': ('float32', 1), 'keras_bf16': ('mixed_bfloat16', 1),
         'keras_bf16_spe20': ('mixed_bfloat16', 20)}


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
  tf.data input) with TensorFlow's default pools, in one model.fit call of
  epochs of plan['steps'] steps (the first, which traces, is the warm-up),
  blocked between epochs by a callback.
  """
  if key.startswith('train'):  # default, or in one slice (default pools)
    defaults = default_config()
    slices = defaults.slices if key == 'train_default' else 1
    hardware.set_threads(hardware.describe(), slices)
    run = train_runner(data_dir, plan, defaults.precision,
                       defaults.data_on_device, defaults.steps_per_loop,
                       slices=slices)
    say('ready')
    while told_to_run():
      t = time.perf_counter()
      run()
      say(time.perf_counter() - t)
    return
  policy, steps_per_execution = KERAS[key]
  tf.keras.mixed_precision.set_global_policy(policy)

  class Turns(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      took = time.perf_counter() - self.start
      say(took if epoch else 'ready')
      if not told_to_run():
        self.model.stop_training = True

  model = keras_convnet(steps_per_execution)
  model.fit(cifar10_input.distorted_inputs(data_dir, BATCH_SIZE, seed=1),
            steps_per_epoch=plan['steps'], epochs=10**9, verbose=0,
            callbacks=[Turns()])


def heard(key, child):
  """The next reply of a serving child."""
  for line in child.stdout:
    if line.startswith('@turn '):
      return line.split()[1]
  raise RuntimeError('benchmark child %s ended (exit status %s)'
                     % (key, child.wait()))


def paired(data_dir, plan, plan_flags):
  """The default training and the Keras configurations, timed in turns.

  Each configuration runs in a child process of its own (its own thread
  pools and precision policy), all alive at once and idle but for their
  turn: each round times plan['steps'] steps of every one, in an order that
  rotates from round to round, so that this machine's drift (over 10% within
  minutes) falls on all of them alike. Each Keras configuration has
  plan['keras_processes'] processes (Keras on 2 cores differs from process
  to process) and its figure is the best of their medians.

  Returns:
    figures: {key: rate(...) plus 'processes', the medians of its
      processes}, and rounds: per round, {key: examples/sec}.
  """
  children = []
  try:
    for key in paired_keys():
      for _ in range(plan['keras_processes'] if key in KERAS else 1):
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), '--serve', key,
             '--data_dir', data_dir] + plan_flags,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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


def bench_memory(data_dir, plan):
  """Peak RSS (MB) of a cifar10_train.py child process."""
  with tempfile.TemporaryDirectory() as train_dir:
    cmd = [sys.executable, os.path.join(ROOT, 'cifar10_train.py'),
           '--train_dir', train_dir, '--data_dir', data_dir, '--max_steps',
           str(plan['memory_steps']), '--seed', '1', '--log_frequency', '1000']
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
  return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


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
    hardware.set_threads(hardware.describe(), slices)
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
  fig['slices'] = slices
  return fig


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', dest='plan', action='store_const', const='quick',
                 default='full',
                 help='fewer, shorter repeats (about 4 minutes on 2 cores)')
  p.add_argument('--smoke', dest='plan', action='store_const', const='smoke',
                 help='every row, with too few steps to mean anything (a '
                 'check that the benchmark runs)')
  cli.add_data_flags(p)
  p.add_argument('--json', default=None, help='where to write the results')
  p.add_argument('--phase', choices=PHASES, help=argparse.SUPPRESS)
  p.add_argument('--serve', choices=('train_default', 'train_one_slice') +
                 tuple(KERAS),
                 help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  plan = PLAN[args.plan]
  plan_flags = ['--%s' % args.plan] if args.plan != 'full' else []
  if args.serve:  # a child timing one configuration in turns (paired())
    serve(args.serve, args.data_dir, plan)
    return 0
  if args.phase:  # a child: one phase's figures, as JSON, to --json
    with open(args.json, 'w') as f:
      json.dump(measure(args.phase, args.data_dir, plan), f)
    return 0
  dataset.maybe_download_and_extract(args.data_dir, args.data_source)
  gpu = bool(tf.config.list_physical_devices('GPU'))
  began = time.time()

  results = {'machine': machine(), 'date': datetime.date.today().isoformat(),
             'mode': args.plan, 'plan': plan}
  fig = results['figures'] = {}
  fig['peak_train_rss_mb'] = bench_memory(args.data_dir, plan)
  turns, rounds = paired(args.data_dir, plan, plan_flags)
  fig.update(turns)
  # Thread pools are set once per process: each phase runs in a child.
  with tempfile.TemporaryDirectory() as tmp:
    for phase in PHASES:
      out = os.path.join(tmp, phase + '.json')
      subprocess.run([sys.executable, os.path.abspath(__file__), '--phase',
                      phase, '--json', out, '--data_dir', args.data_dir] +
                     plan_flags, check=True)
      with open(out) as f:
        fig.update(json.load(f))
  slices = results['slices'] = fig.pop('slices')
  defaults = default_config()
  default = tf.as_dtype(defaults.precision)
  n = defaults.steps_per_loop
  on = defaults.data_on_device

  keras_keys = [k for k in fig if k.startswith('keras')]
  best_keras = max(keras_keys, key=lambda k: fig[k]['median'])
  train_keys = [k for k in fig if k.startswith('train')]
  best = max(train_keys, key=lambda k: fig[k]['median'])
  ratios = results['ratios'] = {
      'best_keras': best_keras,
      'default_over_best_keras': fig['train_default']['median'] /
                                 fig[best_keras]['median'],
      'default_over_previous_default': fig['train_default']['median'] /
                                       fig['train_previous']['median'],
      'default_over_one_slice': fig['train_default']['median'] /
                                fig.get('train_one_slice',
                                        fig['train_default'])['median'],
      'default_over_best_keras_by_round': [
          r['train_default'] / max(r[k] for k in keras_keys) for r in rounds],
      'best_train': best,
      'pipeline_over_default_train': fig['pipeline']['median'] /
                                     fig['train_default']['median']}
  # executor ops per step of the graph loop (kernel_audit.ops_per_step): the
  # CPU default, and the GPU configuration (one slice, XLA) traced here
  fig['ops_per_step'] = {
      'cpu_default':
          kernel_audit.ops_per_step(
              gpu_audit.trace(gpu_audit.Config(1, default.name, on, False),
                              slices)['train_loop']),
      'gpu_configuration':
          kernel_audit.ops_per_step(
              gpu_audit.trace(gpu_audit.Config(1, default.name, True,
                                               True))['train_loop'])
  }
  results['seconds'] = time.time() - began

  m = results['machine']
  print('\nCIFAR-10 toolkit benchmark, %s, %s (%d cores%s), TensorFlow %s, '
        '%s mode, batch %d' % (
            results['date'], m['cpu'], m['cores'],
            ', ' + ', '.join(m['gpus']) if m['gpus'] else ', no GPU',
            m['tensorflow'], results['mode'], BATCH_SIZE))
  print('%-58s %12s' % ('measurement', 'median'))
  data = 'data on device' if on else 'tf.data'
  labels = {
      'pipeline': 'input pipeline alone (examples/sec)',
      'train_default': 'training, default: %s, %s, %d steps/call, %d '
                       'slice(s) (examples/sec)' % (default.name, data, n,
                                                    slices),
      'train_loop1': '  default but 1 step per call (examples/sec)',
      'train_tfdata': '  default but tf.data input (examples/sec)',
      'train_device': '  default but data on device (examples/sec)',
      'train': '  default but float32 (examples/sec)',
      'train_xla': '  float32 with XLA, 1 slice (examples/sec)',
      'train_fp16': '  use_fp16 (examples/sec)',
      'train_one_slice': '  default but 1 slice, default threads '
                         '(examples/sec)',
      'train_previous': '  earlier defaults: tf.data, 1 step/call, 1 slice '
                        '(examples/sec)',
      'keras': 'Keras model.fit, float32 (examples/sec)',
      'keras_bf16': 'Keras, mixed_bfloat16 (examples/sec)',
      'keras_bf16_spe20': 'Keras, mixed_bfloat16, steps_per_execution 20 '
                          '(examples/sec)',
      'eval': 'evaluation (examples/sec)',
      'fc_steps_per_sec': 'fully connected training (steps/sec)'}
  for key, label in labels.items():
    if key in fig:
      print('%-58s %12.1f' % (label, fig[key]['median']))
  for key, what in (('overhead_ms', '%d steps/call' % n),
                    ('overhead_ms_loop1', '1 step/call')):
    o = fig[key]
    print('%-58s %12.3f' % ('host overhead per step, batch %d, %s (ms)' % (
        OVERHEAD_BATCH, what), o['median']))
    print('%-58s %12s' % ('  (paired: loop %.3f ms - all in one call %.3f ms)'
                          % (statistics.median(o['loop_ms_per_step']),
                             statistics.median(o['one_call_ms_per_step'])),
                          ''))
  derived = fig['overhead_ms_loop1']['median'] / n
  results['ratios']['overhead_ms_derived'] = derived
  print('%-58s %12.3f' % ('  derived: the 1 step/call overhead / %d (ms)' % n,
                          derived))
  print('%-58s %12.3f' % ('  batches made in the graph, per step (ms)',
                          fig['overhead_ms']['batches_in_graph_ms']))
  if not gpu:
    print('%-58s %12s' % ('  with use_fp16', 'n/a (no GPU)'))
  print('%-58s %12.0f' % ('peak RSS of cifar10_train.py (MB)',
                          fig['peak_train_rss_mb']))
  ops = fig['ops_per_step']
  print('%-58s %12d' % ('executor ops per step, the CPU default',
                        ops['cpu_default']))
  print('%-58s %12d' % ('executor ops per step, the GPU configuration (XLA)',
                        ops['gpu_configuration']))
  print('%-58s %12.2f' % ('default training / best Keras (%s)' % best_keras,
                          ratios['default_over_best_keras']))
  by_round = ratios['default_over_best_keras_by_round']
  print('%-58s %12s' % ('  in each round: %s' % ' '.join(
      '%.2f' % x for x in by_round), ''))
  print('%-58s %12.2f' % ('default training / earlier defaults',
                          ratios['default_over_previous_default']))
  print('%-58s %12.2f' % ('default training / the same in 1 slice',
                          ratios['default_over_one_slice']))
  print('%-58s %12.2f' % ('input pipeline / default training',
                          ratios['pipeline_over_default_train']))
  print('(%.0f s in all)' % results['seconds'])

  path = args.json or os.path.join(
      ROOT, 'benchmarks', 'results', 'benchmark-%s.json' % results['date'])
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  print('wrote %s' % path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
