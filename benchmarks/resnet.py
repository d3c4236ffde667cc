"""ResNet-20 (--model resnet20) trained by the toolkit, against the same
model in Keras and in PyTorch, timed in turns on this machine.

    python3 -m benchmarks.resnet [--quick | --smoke] [--data_dir /tmp/cifar10_data]
        [--torch_python /path/to/torch-env/bin/python]

Rows, examples/sec at batch 128, each in a child process of its own, all
alive at once and timed in turns round after round (turns.paired), so that
their ratios do not carry this machine's drift:
  - the toolkit: train_loop.make_train_loop with resnet20 and what
    cifar10_train.py picks here (data on the device, slices, precision,
    thread pools);
  - Keras (benchmarks.peers.keras_resnet20) on the same tf.data input
    (resnet20's augmentation, then the mean image subtracted), model.fit,
    in the precision the toolkit's defaults pick (mixed_bfloat16 where
    native), without and with XLA;
  - PyTorch (benchmarks/torch_resnet.py, an interpreter of its own with
    torch, --torch_python): channels_last, bfloat16 autocast where native,
    torch.compile where faster; without one, one line says the row is
    skipped.
Prints each row's median, and the toolkit over the best peer in each round
and their median.
"""

import os
import statistics
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # noqa: E402

import models  # noqa: E402
from cifar10_toolkit import cli  # noqa: E402
from cifar10_toolkit import startup  # noqa: E402

SERVED = ('toolkit', 'keras', 'keras_xla')
# Per mode: steps per turn, warm-up steps, rounds
PLAN = {'full': dict(steps=20, warmup=5, turns=7),
        'quick': dict(steps=10, warmup=3, turns=3),
        'smoke': dict(steps=2, warmup=1, turns=2)}

FLAGS = flags.FlagValues()
flags.DEFINE_boolean('quick', False, 'fewer, shorter turns',
                     flag_values=FLAGS)
flags.DEFINE_boolean('smoke', False, 'too few steps to mean anything (a '
                     'check that the benchmark runs)', flag_values=FLAGS)
cli.mark_exclusive(FLAGS, 'quick', 'smoke')
cli.define_data_flags(FLAGS)
flags.DEFINE_string('torch_python', None, 'an interpreter that imports '
                    'torch: the PyTorch row (default: $CIFAR10_TORCH_PYTHON, '
                    'else this one if it has torch; else the row is skipped)',
                    flag_values=FLAGS)
flags.DEFINE_enum('serve', None, SERVED, 'internal: a child timing one '
                  'configuration in turns', flag_values=FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads
  # oneDNN as cifar10_train.py --model resnet20 has it, for every row: the
  # peers run the same TensorFlow
  models.before_tensorflow('resnet20')

import tensorflow as tf  # noqa: E402

import data_sets  # noqa: E402
import resnet20  # noqa: E402
from benchmarks import peers  # noqa: E402
from benchmarks import turns  # noqa: E402
from benchmarks.measures import (BATCH_SIZE, ROOT, default_config,  # noqa: E402
                                 set_threads, train_runner)
from cifar10_toolkit import interface  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402

TORCH_RESNET = os.path.join(ROOT, 'benchmarks', 'torch_resnet.py')
TITLES = {'toolkit': 'the toolkit (--model resnet20, %s)',
          'keras': 'Keras model.fit, %s',
          'keras_xla': 'Keras model.fit, %s, XLA (jit_compile)',
          'torch': 'PyTorch (benchmarks/torch_resnet.py)'}


def serve(key, data_dir, plan):
  """A child timing one configuration in turns (turns.serve's protocol)."""
  defaults = default_config(resnet20)
  if key == 'toolkit':
    set_threads(defaults.slices)
    turns.serve_runner(train_runner(
        data_dir, plan, defaults.precision, defaults.data_on_device,
        defaults.steps_per_loop, slices=defaults.slices, model_lib=resnet20))
    return
  tf.keras.mixed_precision.set_global_policy(
      'mixed_bfloat16' if defaults.precision == 'bfloat16' else 'float32')
  lib = defaults.input_lib  # its mean image subtracted in tf.data
  mean = tf.reduce_mean(tf.cast(interface.training_images(
      lib, data_dir, data_sets.CIFAR10), tf.float32), 0)
  turns.serve_keras(
      peers.keras_resnet20(jit_compile=key == 'keras_xla'),
      lib.distorted_inputs(data_dir, BATCH_SIZE, seed=1).map(
          lambda x, y: (x - mean, y), num_parallel_calls=tf.data.AUTOTUNE),
      plan)


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  startup.end_startup()
  mode = 'smoke' if FLAGS.smoke else 'quick' if FLAGS.quick else 'full'
  plan, plan_flags = PLAN[mode], ['--%s' % mode] if mode != 'full' else []
  if FLAGS.serve:
    serve(FLAGS.serve, FLAGS.data_dir, plan)
    return 0
  run_control.fetch_data_set(FLAGS.data_dir, FLAGS.data_source,
                             data_sets.CIFAR10)
  me = [sys.executable, '-m', 'benchmarks.resnet']
  commands = [(key, me + ['--serve', key]) for key in SERVED]
  torch_python, why_not = turns.torch_python(FLAGS.torch_python)
  if why_not:
    print('PyTorch row skipped: %s' % why_not, flush=True)
  else:
    commands.append(('torch', [torch_python, TORCH_RESNET, '--steps',
                               str(plan['steps']), '--warmup',
                               str(plan['warmup'])]))
  figures, rounds = turns.paired(FLAGS.data_dir, plan, plan_flags, commands)
  defaults = default_config(resnet20)
  what = '%s, %d slice(s), data %s' % (
      defaults.precision, defaults.slices,
      'on the device' if defaults.data_on_device else 'from tf.data')
  print('ResNet-20 training, batch %d, examples/sec (median of %d rounds in '
        'turns, %d steps a turn)' % (BATCH_SIZE, plan['turns'],
                                     plan['steps']))
  for key, f in figures.items():
    title = TITLES[key].replace('%s', what if key == 'toolkit'
                                else defaults.precision)
    print('  %-66s %8.1f' % (title, f['median']))
  peers_ = [k for k in figures if k != 'toolkit']
  best = max(peers_, key=lambda k: figures[k]['median'])
  ratios = [r['toolkit'] / max(r[k] for k in peers_) for r in rounds]
  print('the toolkit / the best peer (%s): %.2f (rounds %s)' % (
      best, statistics.median(ratios), ' '.join('%.2f' % r for r in ratios)))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main, ends_startup=False))
