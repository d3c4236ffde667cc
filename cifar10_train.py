"""Trains the CIFAR-10 convnet on one device, with checkpoints and summaries.

    python3 cifar10_train.py --data_source /path/to/cifar-10-binary.tar.gz

Prints `<datetime>: step N, loss = X (Y examples/sec; Z sec/batch)` every
log_frequency steps; writes summaries every 100 steps and the model graph once
into train_dir; saves a checkpoint every save_checkpoint_secs and at the end.
A run resumes from the newest checkpoint in train_dir (--fresh sets old
checkpoints and logs aside instead); Ctrl-C, SIGTERM or SIGHUP saves before
exiting; a NaN loss stops the run and keeps the last good checkpoint.

The loop (cifar10_toolkit.train_loop) runs under any tf.distribute strategy:
the default one here, MirroredStrategy / MultiWorkerMirroredStrategy from
cifar10_multi_gpu_train.py.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys

from absl import flags

import data_sets
import models
from cifar10_toolkit import cli

FLAGS = flags.FlagValues()
# the tutorial's, shared with the multi-GPU script
cli.define_training_flags(FLAGS, (data_sets.NAMES, data_sets.get))
cli.define_model_flag(FLAGS, models.NAMES, models.known, models.CHOICES)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads
  models.before_tensorflow(FLAGS.model)  # (oneDNN for some models)

import cifar10_input  # noqa: E402  (TensorFlow loads here)
from cifar10_toolkit import config  # noqa: E402
from cifar10_toolkit import hardware  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import train_loop  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  device = hardware.describe()
  run = config.resolve(FLAGS, device, 1, data_sets.get(FLAGS.dataset),
                       models.get(FLAGS.model), cifar10_input)
  hardware.set_threads(device, run.slices)  # before TensorFlow's runtime starts
  startup.end_startup(run_control.warm_up)
  return train_loop.train(run)


if __name__ == '__main__':
  sys.exit(run_control.run_main(main, ends_startup=False))
