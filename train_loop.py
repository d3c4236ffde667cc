"""The convnet's training loop, shared by cifar10_train.py and
cifar10_multi_gpu_train.py.

  train(args, strategy)        the whole run: resume, loop, save; exit status
  make_train_loop(...)         the graph functions: many steps per call, or
                               one with the summaries' outputs
  write_summaries(...)         the tutorial's summaries of a step

The console's lines are console.StepClock's; the flags are resolved by
hardware.py ('auto'); the feeds are device_input.py's.
"""

import contextlib
import os
import signal
import time

import numpy as np
import tensorflow as tf

import console
import checkpoints
import cifar10_data
import cifar10_input
import cli
import convnet
import convnet_training
import device_input
import hardware
import run_control
import run_folder
import summaries

# A call into the graph takes at most about this long (fewer steps than
# --steps_per_loop when steps are slow, e.g. float16 emulated on a CPU), so
# that a stop signal or a due checkpoint waits no longer.
CALL_SECS = 10


def write_summaries(out, model, state, step, steps_per_sec):
  """The tutorial's summaries for one step's outputs (docs/tensorboard.md)."""
  averages = convnet_training.loss_averages(state)
  summaries.write_scalars({'learning_rate': out['learning_rate'],
                           'global_step/sec': steps_per_sec}, step)
  for name in state.loss_averages:
    tf.summary.scalar(name + ' (raw)', out[name], step=step)
    tf.summary.scalar(name, averages[name], step=step)
  summaries.write_histograms(out['activations'], step, '/activations')
  summaries.write_scalars({layer + '/sparsity': tf.math.zero_fraction(act)
                           for layer, act in out['activations'].items()}, step)
  summaries.write_histograms(model.params, step)
  summaries.write_histograms(out['gradients'], step, '/gradients')
  cifar10_input.image_summary(out['images'], step)


def _first_replica(strategy, structure):
  return tf.nest.map_structure(
      lambda v: strategy.experimental_local_results(v)[0], structure)


def make_train_loop(strategy, model, state, global_batch, feed,
                    jit_compile=False, shards=1):
  """The training functions: many steps per call, or one with summaries.

  shards: slices each replica's batch is made and computed in
    (hardware.num_shards).
  jit_compile: XLA compiles each replica's step, its input included: with
    one replica the whole step (with the data on the device the batch's
    indices too, derived from the step), so that a step is one launch of an
    XLA program; with several, the input and the gradients (the bulk of
    the work): the cross-replica all-reduce and the update of mirrored
    variables that follow it synchronize the replicas, which a
    tf.function inside strategy.run cannot do, so they stay outside XLA.

  Returns:
    train_loop(iterator, num_steps, flags) -> (losses float32 [num_steps],
      times float64 [num_steps], flags): num_steps steps of
      convnet_training.training in one graph loop; times[i] is when step
      i's loss was ready (seconds
      since the epoch, read inside the graph), for the console's lines;
    aux_step(iterator, flags) -> (outputs of one step with activations and
      gradients, for the summaries, its time, flags).
    flags is float32 [4] (SIGINT, SIGTERM, SIGHUP caught, save wanted) of this
    worker (run_control.loop_flags); what returns is its sum over all
    replicas and workers, so that every worker stops, or saves, after the
    same step.
    iterator is the distributed tf.data iterator, or None with the data set
    on the device (feed is then a device_input.DeviceInput).
  """
  replicas = strategy.num_replicas_in_sync
  # One replica makes its whole batch from the step, in replica context.
  in_replica = isinstance(feed, device_input.DeviceInput) and replicas == 1

  def replica_input(batch):
    if in_replica:  # batch is this replica's records; the indices from here
      with tf.name_scope('input'):
        _, indices, step = feed.next_batch(state.global_step)
      batch = (batch, indices, step)
    with tf.name_scope('replica_input'):
      return feed.replica_batch(batch, shards)

  def whole_step(batch, with_aux):
    images, labels = replica_input(batch)
    with tf.name_scope('train_step'):
      return convnet_training.training(model, state, images, labels,
                                       global_batch, with_aux, shards)

  def first_half(batch, with_aux):
    images, labels = replica_input(batch)
    with tf.name_scope('train_step'):
      return convnet_training.gradients(model, state, images, labels, replicas,
                               with_aux, shards)

  def second_half(out):
    with tf.name_scope('train_step'):
      return convnet_training.update(model, state, out, global_batch,
                            convnet_training.reduce_out(out))

  if not jit_compile:
    replica_step = whole_step
  elif replicas == 1:
    replica_step = tf.function(whole_step, jit_compile=True)
  else:
    first_half = tf.function(first_half, jit_compile=True)

    def replica_step(batch, with_aux):
      return second_half(first_half(batch, with_aux))

  def step(iterator, with_aux):
    if in_replica:
      batch = feed.records
    else:
      with tf.name_scope('input'):
        batch = feed.next_batch(state.global_step, iterator)
    out = strategy.run(replica_step, args=(batch, with_aux))
    return _first_replica(strategy, out)

  def agree(flags):
    # (tf.identity: a copy on the replica's device, which all_reduce needs)
    with tf.name_scope('stop_and_save_flags'):
      agreed = strategy.run(lambda f: tf.distribute.get_replica_context(
          ).all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(f)),
                            args=(flags,))
      return _first_replica(strategy, agreed)

  def finished(loss):
    with tf.control_dependencies([loss]):
      return tf.timestamp(name='step_time')

  @tf.function
  def train_loop(iterator, num_steps, flags):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    times = tf.TensorArray(tf.float64, size=num_steps)
    for i in tf.range(num_steps):
      out = step(iterator, False)
      losses = losses.write(i, out['total_loss'])
      times = times.write(i, finished(out['total_loss']))
    return losses.stack(), times.stack(), agree(flags)

  @tf.function
  def aux_step(iterator, flags):
    out = step(iterator, True)
    with tf.name_scope('outputs'):
      out = tf.nest.map_structure(tf.identity, out)
      time_done = finished(out['total_loss'])
    return out, time_done, agree(flags)

  return train_loop, aux_step


def train(args, strategy=None, is_chief=True, worker_dir=None, on_call=None):
  """The training run shared by cifar10_train.py and the multi-GPU script.

  Args:
    args: parsed flags (cifar10_train.build_parser()).
    strategy: a tf.distribute strategy (default: the default strategy).
    is_chief: this worker writes the summaries and the canonical checkpoints
      (and holds train_dir's lock).
    worker_dir: where a non-chief worker writes its own (discarded) ones.
    on_call: optional on_call(step, warm), called after every call into the
      graph with the step reached and whether both training functions have
      run (warm: timing from the first warm call excludes tracing; for
      benchmarks).

  Returns:
    Exit status: 0, or 128 + signal number when stopped by a signal (on any
    worker).

  Raises:
    errors.NanLossError: the loss became NaN or infinite.
    errors.UsageError: a folder, checkpoint or flag problem.
  """
  strategy = strategy or tf.distribute.get_strategy()
  tf.debugging.set_log_device_placement(args.log_device_placement)
  if is_chief:
    run_folder.prepare_dir(args.train_dir, '--train_dir')
  with contextlib.ExitStack() as held:
    if is_chief:
      held.enter_context(run_folder.TrainDirLock(args.train_dir))
    cifar10_data.maybe_download_and_extract(args.data_dir, args.data_source)
    if args.fresh and is_chief:
      run_folder.set_aside(args.train_dir)
    run = _setup(args, strategy, is_chief, worker_dir)
    return _loop(run, on_call or (lambda step, warm: None)) if run else 0


def _loop(run, on_call):
  """Calls into the graph until max_steps or a stop; saves; exit status."""
  args, step = run.args, run.start
  clock = console.StepClock(step, run.global_batch, args.log_frequency)
  saved = time.time()
  with run_control.GracefulStop() as stop, run.writer.as_default(), \
      run.profile:
    run.profile.at(step)
    while step < args.max_steps:
      flags = run_control.loop_flags(stop.signum,
                         time.time() - saved >= args.save_checkpoint_secs)
      losses, times, flags, first = _call(run, step, clock, flags)
      run_control.check_finite(losses, step, args.train_dir)
      clock.log(step, losses, times, first_call=first)
      step += len(losses)
      run.profile.at(step)
      run.after_call(step)
      if step == run.start + 1:
        saved = time.time()  # the first call traced: not a reason to save
      on_call(step, clock.warm is not None)
      line = clock.progress(step, args.max_steps, args.progress_secs)
      if line:
        print(line, flush=True)
      signum, save_now = run_control.read_flags(flags)
      if signum:
        if not stop.requested:
          print('%s: another worker was stopped by %s; saving and stopping' %
                (console.now(), signal.Signals(signum).name), flush=True)
        break
      if save_now and step < args.max_steps:
        checkpoints.save_checkpoint(run.manager, step)
        saved = time.time()
    run.profile.stop()
    path = checkpoints.save_checkpoint(run.manager, step)
    run.writer.flush()
  print('%s: saved checkpoint %s at step %d' % (
      console.now(), path if run.is_chief else 'of this worker', step),
        flush=True)
  print(clock.summary(step), flush=True)
  signum = signum or stop.signum
  return 128 + signum if signum else 0


def _call(run, step, clock, flags):
  """One call into the graph from `step`: the step with summaries (every
  --summary_steps, and the first), or a graph loop of steps up to the next
  summary, profile boundary, max_steps or about CALL_SECS.

  Returns:
    (losses, times, flags, first): numpy arrays of the steps run; whether
    this was a training function's first call (it traced).
  """
  args = run.args
  if step == run.start or (step + 1) % args.summary_steps == 0:
    call = (summaries.write_graph if step == run.start and run.is_chief
            else lambda fn, a: fn(*a))
    out, time_done, flags = call(run.aux_step, (run.iterator, flags))
    run.pending_summary = out
    return (np.array([float(out['total_loss'])]),
            np.array([float(time_done)]), flags, step == run.start)
  to_aux = args.summary_steps - 1 - step % args.summary_steps
  n = min(args.steps_per_loop, args.max_steps - step, to_aux,
          (run.profile.until(step) or args.max_steps) - step,
          clock.steps_within(CALL_SECS))
  losses, times, flags = run.train_loop(run.iterator, tf.constant(n), flags)
  losses, times, first = losses.numpy(), times.numpy(), not run.looped
  if first:  # both training functions have now run once
    run.looped = True
    clock.warm = (step + n, time.time())
  return losses, times, flags, first


class _Run:
  """What one training run holds between calls (made by _setup)."""

  def __init__(self, **fields):
    self.__dict__.update(fields)
    self.looped = False  # train_loop has run (traced) once
    self.pending_summary = None  # outputs of a summary step, to write
    self.last_summary = (self.start, time.time())

  def after_call(self, step):
    """Writes the summaries of a summary step that just ran."""
    if self.pending_summary is None:
      return
    rate = (step - self.last_summary[0]) / (time.time() - self.last_summary[1])
    self.summarize(self.pending_summary, tf.constant(step, tf.int64),
                   tf.constant(rate))
    self.pending_summary, self.last_summary = None, (step, time.time())


def _setup(args, strategy, is_chief, worker_dir):
  """The model, resumed; the input; the graph functions; the run's summary
  writer and HParams; the start line. None when max_steps is reached."""
  device = hardware.describe()  # read once, for every 'auto' flag
  replicas = strategy.num_replicas_in_sync
  global_batch = args.batch_size * replicas
  seed = args.seed if args.seed is not None else int(
      np.random.randint(0, 2**31 - 1))
  with strategy.scope():
    model = convnet.ConvNet(seed)
    state = convnet_training.TrainState(model, seed,
                                        hardware.compute_dtype(args, device))
  ckpt = tf.train.Checkpoint(model=model, state=state)
  latest = checkpoints.resume(ckpt, args.train_dir, repair=is_chief)
  if latest:
    if args.seed is not None and int(state.seed.numpy()) != args.seed:
      print('Note: resuming a run made with seed %d; --seed %d is ignored' %
            (int(state.seed.numpy()), args.seed))
    print('Resuming from %s at step %d' % (latest,
                                          int(state.global_step.numpy())))
  _, manager = checkpoints.checkpoint_manager(
      args.train_dir if is_chief else worker_dir, model=model, state=state)
  start = int(state.global_step.numpy())
  if start >= args.max_steps:
    print('Step %d already reached max_steps %d; nothing to do' %
          (start, args.max_steps))
    return None
  seed = int(state.seed.numpy())

  on_device = hardware.data_on_device(args, device)
  if on_device:
    feed, iterator = device_input.DeviceInput(
        args.data_dir, args.batch_size, seed, strategy), None
  else:
    feed = device_input.DatasetFeed()
    iterator = iter(strategy.distribute_datasets_from_function(
        lambda ctx: cifar10_input.distorted_inputs(
            args.data_dir, args.batch_size, seed, start, ctx)))
  shards = hardware.num_shards(args, replicas, device)
  jit = hardware.jit_compile(args, device)
  train_loop, aux_step = make_train_loop(strategy, model, state, global_batch,
                                         feed, jit, shards)
  writer = (summaries.summary_writer(args.train_dir) if is_chief
            else tf.summary.create_noop_writer())

  @tf.function
  def summarize(out, step, rate):
    write_summaries(out, model, state, step, rate)

  profile = summaries.Profile(args.profile_steps if is_chief else None,
                              args.train_dir)
  if is_chief:
    dtype = state.compute_dtype
    values = summaries.hparams_values(
        args, precision=dtype.name, seed=seed, use_bf16=dtype == tf.bfloat16,
        use_fp16=dtype == tf.float16, data_on_device=str(on_device).lower(),
        jit_compile=jit,
        shards=shards, replicas=replicas,
        data_source=cifar10_data.resolve_source(args.data_source))
    trial_id = '%s seed %d' % (os.path.abspath(args.train_dir), seed)
    summaries.save_run_hparams(args.train_dir, values, trial_id)
    with writer.as_default():
      summaries.write_hparams(values, cli.HPARAMS_METRICS, trial_id)
  print('Training from step %d to %d: %d replica(s) x batch %d%s, %s '
        'compute, seed %d, %d steps per loop, data %s%s' % (
            start, args.max_steps, replicas, args.batch_size,
            ' in %d slices' % shards if shards > 1 else '',
            state.compute_dtype.name, seed, args.steps_per_loop,
            'on the device' if on_device else 'from tf.data',
            ', XLA' if jit else ''), flush=True)
  return _Run(args=args, is_chief=is_chief, model=model, state=state,
              manager=manager, iterator=iterator, train_loop=train_loop,
              aux_step=aux_step, summarize=summarize, writer=writer,
              profile=profile, start=start, global_batch=global_batch)
