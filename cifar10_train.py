"""Trains the CIFAR-10 convnet on one device, with checkpoints and summaries.

    python3 cifar10_train.py --data_source ../shared/cifar10/cifar-10-binary.tar.gz

Prints `<datetime>: step N, loss = X (Y examples/sec; Z sec/batch)` every
log_frequency steps; writes summaries every 100 steps and the model graph once
into train_dir; saves a checkpoint every save_checkpoint_secs and at the end.
A run resumes from the newest checkpoint in train_dir (--fresh sets old
checkpoints and logs aside instead); Ctrl-C or SIGTERM saves before exiting;
a NaN loss stops the run and keeps the last good checkpoint.

The loop (train) runs under any tf.distribute strategy: the default one
here, MirroredStrategy / MultiWorkerMirroredStrategy from
cifar10_multi_gpu_train.py.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import functools
import shutil
import sys
import time

import numpy as np
import tensorflow as tf

import cifar10_input
import convnet
import train_lib


def build_parser(description=__doc__):
  """The tutorial's training flags and defaults, plus the toolkit's own."""
  p = train_lib.ArgumentParser(
      description=description.split('\n')[0],
      formatter_class=lambda prog: train_lib.argparse.HelpFormatter(
          prog, max_help_position=34))
  p.add_argument('--train_dir', default='/tmp/cifar10_train',
                 help='where checkpoints and event logs are written and '
                 'resumed from (default %(default)s)')
  p.add_argument('--max_steps', type=train_lib.positive_int, default=1000000,
                 help='global step at which training stops (default '
                 '%(default)s)')
  p.add_argument('--log_frequency', type=train_lib.positive_int, default=10,
                 help='print a progress line every this many steps (default '
                 '%(default)s)')
  p.add_argument('--batch_size', type=train_lib.positive_int, default=128,
                 help='images per batch, per replica (default %(default)s)')
  train_lib.add_data_flags(p)
  train_lib.add_bool(p, 'use_fp16', False, 'mixed precision: float16 '
                     'compute, float32 variables, dynamic loss scaling')
  train_lib.add_bool(p, 'use_bf16', None, 'mixed precision: bfloat16 compute, '
                     'float32 variables', 'on for a CPU with native bfloat16 '
                     '(AMX or AVX512-BF16) and no GPU, else off')
  train_lib.add_bool(p, 'log_device_placement', False,
                     'log where each operation runs')
  p.add_argument('--seed', type=train_lib.non_negative_int, default=None,
                 help='seed of the initial weights, input order and '
                 'distortions (default: random; a resumed run keeps its own)')
  train_lib.add_bool(p, 'fresh', False, 'start afresh: move the checkpoints '
                     'and logs in train_dir to train_dir/previous-<time>/ '
                     'instead of resuming')
  p.add_argument('--save_checkpoint_secs', type=train_lib.positive_float,
                 default=180, help='seconds between checkpoints (default '
                 '%(default)s)')
  p.add_argument('--summary_steps', type=train_lib.positive_int, default=100,
                 help='write summaries every this many steps (default '
                 '%(default)s)')
  train_lib.add_bool(p, 'jit_compile', False,
                     'compile the training step with XLA (one replica only)')
  return p


def native_bf16_cpu():
  """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16)."""
  try:
    with open('/proc/cpuinfo') as f:
      flags = f.read()
  except OSError:
    return False
  return ' amx_bf16' in flags or ' avx512_bf16' in flags


def compute_dtype(args):
  """float16 with --use_fp16; bfloat16 with --use_bf16 (or by default on a
  CPU with native bfloat16 and no GPU); else float32."""
  if args.use_fp16 and args.use_bf16:
    raise train_lib.UsageError('--use_fp16 and --use_bf16 exclude each other')
  if args.use_fp16:
    return tf.float16
  bf16 = args.use_bf16
  if bf16 is None:
    bf16 = native_bf16_cpu() and not tf.config.list_physical_devices('GPU')
  return tf.bfloat16 if bf16 else tf.float32


def set_aside(train_dir):
  """Moves a previous run's files to train_dir/previous-<time>/ (--fresh)."""
  if not os.path.isdir(train_dir):
    return
  entries = [e for e in os.listdir(train_dir) if not e.startswith('previous-')]
  if not entries:
    return
  dest = os.path.join(train_dir, time.strftime('previous-%Y%m%d-%H%M%S'))
  os.makedirs(dest)
  for e in entries:
    shutil.move(os.path.join(train_dir, e), dest)
  print('Moved the previous run in %s to %s' % (train_dir, dest))


def write_summaries(out, model, state, step, steps_per_sec):
  """The tutorial's summaries for one step's outputs (see REFERENCE.md)."""
  averages = convnet.loss_averages(state)
  train_lib.write_scalars({'learning_rate': out['learning_rate'],
                           'global_step/sec': steps_per_sec}, step)
  for name in state.loss_averages:
    tf.summary.scalar(name + ' (raw)', out[name], step=step)
    tf.summary.scalar(name, averages[name], step=step)
  train_lib.write_histograms(out['activations'], step, '/activations')
  train_lib.write_scalars({layer + '/sparsity': tf.math.zero_fraction(act)
                           for layer, act in out['activations'].items()}, step)
  train_lib.write_histograms(model.params, step)
  train_lib.write_histograms(out['gradients'], step, '/gradients')
  cifar10_input.image_summary(out['images'], step)


def _first_replica(strategy, structure):
  return tf.nest.map_structure(
      lambda v: strategy.experimental_local_results(v)[0], structure)


def make_train_step(strategy, model, state, global_batch, jit_compile=False):
  """tf.function(iterator, with_aux) running convnet.training on each replica."""
  replica_fn = functools.partial(convnet.training, model, state,
                                 global_batch_size=global_batch)
  if jit_compile:
    replica_fn = tf.function(replica_fn, jit_compile=True)

  @tf.function
  def train_step(iterator, with_aux):
    images, labels = next(iterator)
    out = strategy.run(replica_fn, args=(images, labels),
                       kwargs={'with_aux': with_aux})
    return _first_replica(strategy, out)

  return train_step


def train(args, strategy=None, is_chief=True, worker_dir=None):
  """The training loop shared by cifar10_train.py and the multi-GPU script.

  Args:
    args: parsed flags (build_parser()).
    strategy: a tf.distribute strategy (default: the default strategy).
    is_chief: this worker writes the summaries and the canonical checkpoints.
    worker_dir: where a non-chief worker writes its own (discarded) ones.

  Returns:
    Exit status: 0, or 128 + signal number when stopped by a signal.

  Raises:
    train_lib.NanLossError: the loss became NaN or infinite.
  """
  strategy = strategy or tf.distribute.get_strategy()
  replicas = strategy.num_replicas_in_sync
  global_batch = args.batch_size * replicas
  if args.jit_compile and replicas > 1:
    raise train_lib.UsageError('--jit_compile needs a single replica, got %d'
                               % replicas)
  tf.debugging.set_log_device_placement(args.log_device_placement)
  cifar10_input.maybe_download_and_extract(args.data_dir, args.data_source)
  if args.fresh and is_chief:
    set_aside(args.train_dir)

  seed = args.seed if args.seed is not None else int(
      np.random.randint(0, 2**31 - 1))
  with strategy.scope():
    model = convnet.ConvNet(seed)
    state = convnet.TrainState(model, seed, compute_dtype(args))
  ckpt_dir = args.train_dir if is_chief else worker_dir
  ckpt, manager = train_lib.checkpoint_manager(ckpt_dir, model=model,
                                               state=state)
  latest = tf.train.latest_checkpoint(args.train_dir)
  if latest:
    train_lib.restore(ckpt, latest)
    if args.seed is not None and int(state.seed.numpy()) != args.seed:
      print('Note: resuming a run made with seed %d; --seed %d is ignored' %
            (int(state.seed.numpy()), args.seed))
    print('Resuming from %s at step %d' % (latest,
                                          int(state.global_step.numpy())))
  start = int(state.global_step.numpy())
  if start >= args.max_steps:
    print('Step %d already reached max_steps %d; nothing to do' %
          (start, args.max_steps))
    return 0
  seed = int(state.seed.numpy())

  dataset = strategy.distribute_datasets_from_function(
      lambda ctx: cifar10_input.distorted_inputs(
          args.data_dir, args.batch_size, seed, start, ctx))
  iterator = iter(dataset)
  train_step = make_train_step(strategy, model, state, global_batch,
                               args.jit_compile)
  writer = (tf.summary.create_file_writer(args.train_dir) if is_chief
            else tf.summary.create_noop_writer())
  summarize = tf.function(lambda out, step, rate: write_summaries(
      out, model, state, step, rate))
  print('Training from step %d to %d: %d replica(s) x batch %d, %s compute, '
        'seed %d' % (start, args.max_steps, replicas, args.batch_size,
                     state.compute_dtype.name, seed), flush=True)

  step = start
  last_save = last_log = time.time()
  last_summary = (start, time.time())
  last_log_step = start
  with train_lib.GracefulStop() as stop, writer.as_default():
    while step < args.max_steps and not stop.requested:
      with_aux = step == start or (step + 1) % args.summary_steps == 0
      if step == start and is_chief:
        out = train_lib.write_graph(train_step, (iterator, with_aux), step)
      else:
        out = train_step(iterator, with_aux)
      loss_value = float(out['total_loss'])
      step += 1
      if not np.isfinite(loss_value):
        raise train_lib.NanLossError(
            'loss is %s at step %d; stopped without saving, the last good '
            'checkpoint is %s' % (loss_value, step,
                                  tf.train.latest_checkpoint(args.train_dir)))
      if step % args.log_frequency == 0:
        duration = time.time() - last_log
        steps = step - last_log_step
        print('%s: step %d, loss = %.2f (%.1f examples/sec; %.3f sec/batch)' %
              (train_lib.now(), step, loss_value,
               steps * global_batch / duration, duration / steps), flush=True)
        last_log, last_log_step = time.time(), step
      if with_aux:
        rate = (step - last_summary[0]) / (time.time() - last_summary[1])
        summarize(out, tf.constant(step, tf.int64), tf.constant(rate))
        last_summary = (step, time.time())
      if time.time() - last_save >= args.save_checkpoint_secs:
        manager.save(checkpoint_number=step)
        last_save = time.time()
    path = manager.save(checkpoint_number=step)
    writer.flush()
  if is_chief:
    print('%s: saved checkpoint %s at step %d' % (train_lib.now(), path, step),
          flush=True)
  return stop.exit_status


def main(argv=None):
  args = build_parser().parse_args(argv)
  return train(args)


if __name__ == '__main__':
  sys.exit(train_lib.run_main(main))
