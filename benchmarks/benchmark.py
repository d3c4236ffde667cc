"""Measures the toolkit against a Keras equivalent, in one run on one machine.

    python3 benchmarks/benchmark.py [--quick] [--data_dir /tmp/cifar10_data]

Prints a table and writes it as JSON (--json, default
benchmarks/results/benchmark-<date>.json):
  - the distorted training input pipeline alone, examples/sec;
  - the convnet training step of cifar10_train.py (its make_train_step fed by
    its own input pipeline) at batch 128, with XLA off and on, and with
    use_bf16 where the CPU has native bfloat16 or a GPU is present, and
    use_fp16 where a GPU is present;
  - evaluation (cifar10_eval.Evaluator), examples/sec;
  - the fully connected model's training, steps/sec;
  - the same convnet written as a user would in Keras (tf.keras layers,
    model.compile with SGD 0.1, model.fit on the same tf.data input),
    examples/sec, and the ratio of the toolkit's best training figure to it;
  - peak resident memory of a cifar10_train.py run (a child process).
Warm-up is excluded; each figure is the median of several timed repeats.
"""

import argparse
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

import cifar10_eval  # noqa: E402
import cifar10_input  # noqa: E402
import cifar10_train  # noqa: E402
import convnet  # noqa: E402
import data_helpers  # noqa: E402
import train_lib  # noqa: E402
import two_layer_fc  # noqa: E402

BATCH_SIZE = 128
# (repeats, steps per repeat, warm-up steps) per mode
PLAN = {'full': dict(repeats=5, steps=60, warmup=15, fc_steps=200,
                     memory_steps=400, eval_examples=10000),
        'quick': dict(repeats=3, steps=15, warmup=5, fc_steps=60,
                      memory_steps=60, eval_examples=2000)}


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


def bench_train(data_dir, plan, jit_compile=False, dtype=tf.float32):
  strategy = tf.distribute.get_strategy()
  model = convnet.ConvNet(1)
  state = convnet.TrainState(model, compute_dtype=dtype)
  step = cifar10_train.make_train_step(strategy, model, state, BATCH_SIZE,
                                       jit_compile)
  it = iter(cifar10_input.distorted_inputs(data_dir, BATCH_SIZE, seed=1))

  def run(steps=plan['steps']):
    for _ in range(steps):
      float(step(it, False)['total_loss'])  # the loop's per-step NaN check
  return rate(timed_repeats(run, plan['repeats'], plan['warmup']),
              plan['steps'] * BATCH_SIZE)


def bench_eval(data_dir, plan):
  ev = cifar10_eval.Evaluator(data_dir, 'test', plan['eval_examples'])
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


def keras_convnet():
  """The tutorial's network as a user would write it in Keras."""
  k = tf.keras
  init = lambda sd: k.initializers.TruncatedNormal(stddev=sd)
  lrn = lambda: k.layers.Lambda(lambda x: tf.nn.local_response_normalization(
      x, depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75))
  model = k.Sequential([
      k.Input((24, 24, 3)),
      k.layers.Conv2D(64, 5, padding='same', activation='relu',
                      kernel_initializer=init(5e-2)),
      k.layers.MaxPooling2D(3, 2, padding='same'),
      lrn(),
      k.layers.Conv2D(64, 5, padding='same', activation='relu',
                      kernel_initializer=init(5e-2),
                      bias_initializer=k.initializers.Constant(0.1)),
      lrn(),
      k.layers.MaxPooling2D(3, 2, padding='same'),
      k.layers.Flatten(),
      k.layers.Dense(384, activation='relu', kernel_initializer=init(0.04),
                     bias_initializer=k.initializers.Constant(0.1),
                     kernel_regularizer=k.regularizers.l2(0.002)),
      k.layers.Dense(192, activation='relu', kernel_initializer=init(0.04),
                     bias_initializer=k.initializers.Constant(0.1),
                     kernel_regularizer=k.regularizers.l2(0.002)),
      k.layers.Dense(10, kernel_initializer=init(1 / 192.0)),
  ])
  model.compile(optimizer=k.optimizers.SGD(0.1),
                loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  return model


def bench_keras(data_dir, plan):
  model = keras_convnet()
  ds = cifar10_input.distorted_inputs(data_dir, BATCH_SIZE, seed=1)

  class Clock(tf.keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.times = []

    def on_epoch_begin(self, epoch, logs=None):
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      self.times.append(time.perf_counter() - self.start)

  clock = Clock()
  model.fit(ds, steps_per_epoch=plan['warmup'], epochs=1, verbose=0)
  model.fit(ds, steps_per_epoch=plan['steps'], epochs=plan['repeats'],
            verbose=0, callbacks=[clock])
  return rate(clock.times, plan['steps'] * BATCH_SIZE)


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
  gpus = [tf.config.experimental.get_device_details(g).get('device_name', g.name)
          for g in tf.config.list_physical_devices('GPU')]
  return {'cpu': cpu, 'cores': os.cpu_count(), 'gpus': gpus,
          'tensorflow': tf.__version__, 'python': platform.python_version()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true',
                 help='fewer, shorter repeats (under two minutes on 2 cores)')
  train_lib.add_data_flags(p)
  p.add_argument('--json', default=None, help='where to write the results')
  args = p.parse_args(argv)
  plan = PLAN['quick' if args.quick else 'full']
  cifar10_input.maybe_download_and_extract(args.data_dir, args.data_source)
  gpu = bool(tf.config.list_physical_devices('GPU'))
  began = time.time()

  results = {'machine': machine(), 'date': datetime.date.today().isoformat(),
             'mode': 'quick' if args.quick else 'full', 'plan': plan}
  fig = results['figures'] = {}
  fig['peak_train_rss_mb'] = bench_memory(args.data_dir, plan)
  fig['pipeline'] = bench_pipeline(args.data_dir, plan)
  fig['train'] = bench_train(args.data_dir, plan)
  fig['train_xla'] = bench_train(args.data_dir, plan, jit_compile=True)
  if gpu or cifar10_train.native_bf16_cpu():
    fig['train_bf16'] = bench_train(args.data_dir, plan, dtype=tf.bfloat16)
  if gpu:
    fig['train_fp16'] = bench_train(args.data_dir, plan, dtype=tf.float16)
    fig['train_xla_fp16'] = bench_train(args.data_dir, plan, True,
                                        tf.float16)
  fig['keras'] = bench_keras(args.data_dir, plan)
  fig['eval'] = bench_eval(args.data_dir, plan)
  fig['fc_steps_per_sec'] = bench_fc(args.data_dir, plan)

  train_keys = [k for k in fig if k.startswith('train')]
  best = max(train_keys, key=lambda k: fig[k]['median'])
  ratios = results['ratios'] = {
      'best_train': best,
      'best_train_over_keras': fig[best]['median'] / fig['keras']['median'],
      'float32_train_over_keras': fig['train']['median'] /
                                  fig['keras']['median'],
      'pipeline_over_best_train': fig['pipeline']['median'] /
                                  fig[best]['median']}
  results['seconds'] = time.time() - began

  m = results['machine']
  print('\nCIFAR-10 toolkit benchmark, %s, %s (%d cores%s), TensorFlow %s, '
        '%s mode, batch %d' % (
            results['date'], m['cpu'], m['cores'],
            ', ' + ', '.join(m['gpus']) if m['gpus'] else ', no GPU',
            m['tensorflow'], results['mode'], BATCH_SIZE))
  print('%-44s %14s' % ('measurement', 'median'))
  labels = {'pipeline': 'input pipeline alone (examples/sec)',
            'train': 'convnet training step, float32 (examples/sec)',
            'train_xla': '  float32 with XLA (examples/sec)',
            'train_bf16': '  use_bf16 (examples/sec)',
            'train_fp16': '  use_fp16 (examples/sec)',
            'train_xla_fp16': '  use_fp16 with XLA (examples/sec)',
            'keras': 'Keras model.fit, same network (examples/sec)',
            'eval': 'evaluation (examples/sec)',
            'fc_steps_per_sec': 'fully connected training (steps/sec)'}
  for key, label in labels.items():
    if key in fig:
      print('%-44s %14.1f' % (label, fig[key]['median']))
  if not gpu:
    print('%-44s %14s' % ('  with use_fp16', 'n/a (no GPU)'))
  print('%-44s %14.0f' % ('peak RSS of cifar10_train.py (MB)',
                          fig['peak_train_rss_mb']))
  print('%-44s %14.2f' % ('best training (%s) / Keras' % best,
                          ratios['best_train_over_keras']))
  print('%-44s %14.2f' % ('float32 training / Keras',
                          ratios['float32_train_over_keras']))
  print('%-44s %14.2f' % ('input pipeline / best training',
                          ratios['pipeline_over_best_train']))
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
