"""Trains the CIFAR-10 convnet on one device, with checkpoints and summaries.

    python3 cifar10_train.py --data_source /path/to/cifar-10-binary.tar.gz

Prints `<datetime>: step N, loss = X (Y examples/sec; Z sec/batch)` every
log_frequency steps; writes summaries every 100 steps and the model graph once
into train_dir; saves a checkpoint every save_checkpoint_secs and at the end.
A run resumes from the newest checkpoint in train_dir (--fresh sets old
checkpoints and logs aside instead); Ctrl-C, SIGTERM or SIGHUP saves before
exiting; a NaN loss stops the run and keeps the last good checkpoint.

The loop (train_loop.train) runs under any tf.distribute strategy: the
default one here, MirroredStrategy / MultiWorkerMirroredStrategy from
cifar10_multi_gpu_train.py.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import cli
if __name__ == '__main__':
  cli.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import sys


def build_parser(description=__doc__):
  """The tutorial's training flags and defaults, plus the toolkit's own
  (cli.convnet_train_parser, shared with cifar10_multi_gpu_train.py)."""
  return cli.convnet_train_parser(description)


if __name__ == '__main__':
  cli.parse_early(build_parser)  # -h and flag errors, before TensorFlow loads

import hardware  # noqa: E402  (TensorFlow loads here)
import run_control  # noqa: E402
import train_loop  # noqa: E402


def main(argv=None):
  args = build_parser().parse_args(argv)
  args.shards = hardware.num_shards(args)
  hardware.set_threads(hardware.describe(), args.shards)
  return train_loop.train(args)


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
