"""Times this checkout's default training against another checkout's, and
against the best Keras, in turns in one run (how a change is shown to keep
the speed).

    python3 -m benchmarks.ab --other /path/to/other/checkout [--quick] [--data_dir D]

Each configuration is a `benchmark.py --serve` child of its checkout (the
other's own code, flags and thread pools), all alive at once and timed in
turns, round after round (turns.paired). Prints each one's median
examples/sec and, per round, this checkout over the other and over the best
Keras.
"""

import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # noqa: E402

import data_sets  # noqa: E402
from cifar10_toolkit import cli  # noqa: E402

FLAGS = flags.FlagValues()
flags.DEFINE_string('other', None, 'the checkout to compare with (its '
                    'benchmarks/benchmark.py --serve is run)',
                    flag_values=FLAGS)
flags.mark_flag_as_required('other', flag_values=FLAGS)
flags.DEFINE_boolean('quick', False, 'fewer, shorter rounds',
                     flag_values=FLAGS)
flags.DEFINE_integer('rounds', None, 'rounds of turns (default: the plan\'s)',
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_list('keras', None, 'the Keras configurations to time beside '
                  'them (default: those benchmark.py times on this machine: '
                  'the mixed_bfloat16 ones where bfloat16 is native, keras '
                  '(float32) otherwise)', flag_values=FLAGS)
cli.define_data_flags(FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads

from benchmarks import peers  # noqa: E402
from benchmarks import turns  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from benchmarks.measures import PLAN  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  other = os.path.join(FLAGS.other, 'benchmarks', 'benchmark.py')
  if not os.path.isfile(other):
    raise SystemExit('%s: error: --other %s: no benchmarks/benchmark.py there'
                     % (os.path.basename(sys.argv[0]), FLAGS.other))
  keras = FLAGS.keras or turns.keras_keys()
  unknown = [k for k in keras if k not in peers.KERAS]
  if unknown:
    raise SystemExit('%s: error: --keras %s: not a Keras configuration (%s)'
                     % (os.path.basename(sys.argv[0]), ','.join(unknown),
                        ', '.join(peers.KERAS)))
  run_control.fetch_data_set(FLAGS.data_dir, FLAGS.data_source,
                             data_sets.CIFAR10)
  plan = dict(PLAN['quick' if FLAGS.quick else 'full'])
  if FLAGS.rounds:
    plan['turns'] = FLAGS.rounds
  # (the other checkout's own modules first: its benchmark.py as a script)
  commands = [('this', turns.BENCHMARK + ['--serve', 'train_default']),
              ('other', ['env', 'PYTHONPATH=' + os.path.abspath(FLAGS.other),
                         sys.executable, other, '--serve', 'train_default'])]
  commands += [(k, turns.BENCHMARK + ['--serve', k]) for k in keras]
  figures, rounds = turns.paired(FLAGS.data_dir, plan,
                                 ['--quick'] if FLAGS.quick else [], commands)
  for key, f in figures.items():
    print('%-20s %10.0f examples/sec (median of %d)' % (
        key, f['median'], len(f['repeats'])))
  this_other = [r['this'] / r['other'] for r in rounds]
  this_keras = [r['this'] / max(r[k] for k in keras) for r in rounds]
  print('this / other, per round: %s; median %.2f' % (
      ' '.join('%.2f' % x for x in this_other),
      statistics.median(this_other)))
  print('this / best Keras, per round: %s; median %.2f' % (
      ' '.join('%.2f' % x for x in this_keras),
      statistics.median(this_keras)))
  return 0


if __name__ == '__main__':
  sys.exit(run_control.run_main(main, ends_startup=False))
