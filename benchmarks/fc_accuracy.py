"""Test accuracy of run_fc_model.py with its defaults over several seeds.

    python3 -m benchmarks.fc_accuracy [--seeds 1,2,3] [--data_dir /tmp/cifar10_data] [-- FLAG...]

Runs run_fc_model.py once per seed (a child process each, default flags but
--seed, a temporary train_dir and the flags after --) and prints each run's test accuracy and
total time, then the mean and range of the accuracy, the wall time, and the
peak resident memory of the runs.
"""

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from cifar10_toolkit import cli  # noqa: E402

FLAGS = flags.FlagValues()
flags.DEFINE_list('seeds', ['1', '2', '3'], 'the seeds, one run each',
                  flag_values=FLAGS)
flags.register_validator('seeds', lambda v: all(s.isdigit() for s in v),
                         message='must be non-negative integers',
                         flag_values=FLAGS)
flags.DEFINE_string('data_dir', '/tmp/cifar10_data', 'the data set, as '
                    'run_fc_model.py takes it', flag_values=FLAGS)


def main(argv=None):
  extra = cli.parse(FLAGS, argv, __doc__, 'FLAG', optional=True)
  accuracies, began = [], time.time()
  for seed in [int(s) for s in FLAGS.seeds]:
    with tempfile.TemporaryDirectory() as train_dir:
      t = time.time()
      out = subprocess.run(
          [sys.executable, os.path.join(ROOT, 'run_fc_model.py'), '--seed',
           str(seed), '--data_dir', FLAGS.data_dir, '--train_dir', train_dir]
          + extra, check=True, capture_output=True, text=True).stdout
    acc = float(re.search(r'^Test accuracy ([\d.]+)$', out, re.M).group(1))
    total = re.search(r'^Total time: +([\d.]+)s$', out, re.M).group(1)
    accuracies.append(acc)
    print('seed %d: test accuracy %.4f, total time %ss (wall %.1fs)' %
          (seed, acc, total, time.time() - t), flush=True)
  peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
  print('test accuracy over %d seeds: mean %.4f, range %.4f-%.4f' %
        (len(accuracies), statistics.mean(accuracies), min(accuracies),
         max(accuracies)))
  print('wall time %.1fs for %d runs; peak RSS of a run %.0f MB' %
        (time.time() - began, len(accuracies), peak))
  return 0


if __name__ == '__main__':
  sys.exit(main())
