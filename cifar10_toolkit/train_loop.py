"""The convnet's training loop, shared by cifar10_train.py and
cifar10_multi_gpu_train.py.

  train(config, strategy)      the whole run: resume, loop, save; exit status
  make_train_loop(...)         the graph functions: many steps per call, or
                               one step with the summaries' outputs

The run's configuration is config.TrainConfig, resolved once by the script
(its data set, model and input libraries too); the feeds are device_input's.
"""

import contextlib
import dataclasses
import os
import signal
import sys
import time

import numpy as np
import tensorflow as tf

from cifar10_toolkit import checkpoints
from cifar10_toolkit import console
from cifar10_toolkit import dataset
from cifar10_toolkit import device_input
from cifar10_toolkit import grad_ops
from cifar10_toolkit import interface
from cifar10_toolkit import run_control
from cifar10_toolkit import run_folder
from cifar10_toolkit import run_record
from cifar10_toolkit import summaries

# A call into the graph takes at most about this long (fewer steps than
# --steps_per_loop when steps are slow, e.g. float16 emulated on a CPU), so
# that a stop signal or a due checkpoint waits no longer.
CALL_SECS = 10


def _first_replica(strategy, structure):
  return tf.nest.map_structure(
      lambda v: strategy.experimental_local_results(v)[0], structure)


def make_train_loop(strategy, model_lib, model, state, global_batch, feed,
                    jit_compile=False, slices=1):
  """The training functions: many steps per call, or one with summaries.

  model_lib: the model library (convnet.py), whose training makes a step.
  slices: slices each replica's batch is made and computed in.
  jit_compile: XLA compiles each replica's step, its input included: with
    one replica the whole step (a step is one launch of an XLA program);
    with several, the input and the gradients: the all-reduce and the
    update of mirrored variables synchronize the replicas, which a
    tf.function inside strategy.run cannot do, so they stay outside XLA.

  Returns:
    train_loop(iterator, num_steps, votes, first_logged=0,
      log_frequency=1) -> (losses float32 [num_steps], times float64
      [num_steps], votes): num_steps steps of model_lib.training in one graph
      loop; times[i] is when step i's loss was ready (seconds since the
      epoch, read inside the graph), for the console's lines, on the steps
      that print one (i = first_logged + k x log_frequency, int32, 0 <=
      first_logged < log_frequency), NaN on others (no host wait on a GPU);
    summary_step(iterator, votes) -> (outputs of one step with activations
      and gradients, for the summaries, its time, votes).
    votes is float32 [4] (SIGINT, SIGTERM, SIGHUP caught, save wanted) of
    this worker (run_control.stop_votes); what returns is its sum over all
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
      return feed.replica_batch(batch, slices)

  def whole_step(batch, with_summaries):
    images, labels = replica_input(batch)
    with tf.name_scope('train_step'):
      return model_lib.training(model, state, images, labels, global_batch,
                              with_summaries, slices)

  def first_half(batch, with_summaries):
    images, labels = replica_input(batch)
    with tf.name_scope('train_step'):
      return model_lib.gradients(model, state, images, labels, replicas,
                               with_summaries, slices)

  def second_half(out):
    with tf.name_scope('train_step'):
      return model_lib.update(model, state, out, global_batch,
                            grad_ops.all_reduce(out))

  if not jit_compile:
    replica_step = whole_step
  elif replicas == 1:
    replica_step = tf.function(whole_step, jit_compile=True,
                               autograph=False)
  else:
    first_half = tf.function(first_half, jit_compile=True,
                             autograph=False)

    def replica_step(batch, with_summaries):
      return second_half(first_half(batch, with_summaries))

  def step(iterator, with_summaries):
    if in_replica:
      batch = feed.records
    else:
      with tf.name_scope('input'):
        batch = feed.next_batch(state.global_step, iterator)
    out = strategy.run(replica_step, args=(batch, with_summaries))
    return _first_replica(strategy, out)

  def agree(votes):
    # (tf.identity: a copy on the replica's device, which all_reduce needs)
    with tf.name_scope('stop_and_save_votes'):
      agreed = strategy.run(lambda v: tf.distribute.get_replica_context(
          ).all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(v)),
                            args=(votes,))
      return _first_replica(strategy, agreed)

  def finished(loss):
    with tf.control_dependencies([loss]):
      return tf.timestamp(name='step_time')

  def console_time(loss, i, first_logged, log_frequency):
    # (the host's clock read after a loss waits for the device: only on the
    # console's steps, decided on the host from int32 loop counters)
    with tf.name_scope('console_time'):
      due = tf.equal((i - first_logged) % log_frequency, 0)  # (>= 0: floor)
      return tf.cond(due, lambda: finished(loss),
                     lambda: tf.constant(np.nan, tf.float64))

  # (AutoGraph off: the loop is written as the graph loop it is, and
  # tracing skips converting every function that a step calls)
  @tf.function(autograph=False)
  def train_loop(iterator, num_steps, votes, first_logged=0,
                 log_frequency=1):
    def body(i, losses, times):
      out = step(iterator, False)
      return (i + 1, losses.write(i, out['total_loss']),
              times.write(i, console_time(out['total_loss'], i,
                                          first_logged, log_frequency)))
    _, losses, times = tf.while_loop(
        lambda i, *_: i < num_steps, body,
        (tf.constant(0), tf.TensorArray(tf.float32, size=num_steps),
         tf.TensorArray(tf.float64, size=num_steps)),
        maximum_iterations=num_steps)
    return losses.stack(), times.stack(), agree(votes)

  @tf.function(autograph=False)
  def summary_step(iterator, votes):
    out = step(iterator, True)
    with tf.name_scope('outputs'):
      out = tf.nest.map_structure(tf.identity, out)
      time_done = finished(out['total_loss'])
    return out, time_done, agree(votes)

  return train_loop, summary_step


def train(config, strategy=None, is_chief=True, worker_dir=None,
          on_call=None):
  """The training run shared by cifar10_train.py and the multi-GPU script.

  Args:
    config: the run's config.TrainConfig (config.replicas must be the
      strategy's).
    strategy: a tf.distribute strategy (default: the default strategy).
    is_chief: this worker writes the summaries and the canonical checkpoints
      (and holds train_dir's lock).
    worker_dir: where a non-chief worker writes its own (discarded) ones.
    on_call: optional on_call(step, warm), called after every call into the
      graph with the step reached and whether both training functions have
      run (warm: timing from then excludes tracing; for benchmarks).

  Returns:
    Exit status: 0, or 128 + signal number when stopped by a signal (on any
    worker).

  Raises:
    errors.NanLossError: the loss became NaN or infinite.
    errors.UsageError: a folder, checkpoint or flag problem.
  """
  strategy = strategy or tf.distribute.get_strategy()
  if strategy.num_replicas_in_sync != config.replicas:
    raise ValueError('config.replicas %d, but the strategy has %d' % (
        config.replicas, strategy.num_replicas_in_sync))
  tf.debugging.set_log_device_placement(config.log_device_placement)
  made = (run_folder.prepare_dir(config.train_dir, '--train_dir')
          if is_chief else [])
  with contextlib.ExitStack() as held:
    held.enter_context(run_folder.removed_if_empty(made))
    if is_chief:
      held.enter_context(run_folder.TrainDirLock(config.train_dir))
    if not config.fresh:  # (the wrong --dataset: said before any fetch)
      run_record.check_newest(checkpoints.checkpoint_candidates(
          config.train_dir)[0], config.data_set.name, config.model_name)
    run_control.fetch_data_set(config.data_dir, config.data_source,
                               config.data_set)
    if config.fresh and is_chief:
      run_folder.set_aside(config.train_dir, keep=[config.data_dir],
                           keep_names=config.data_set.kept_names)
    run = _setup(config, strategy, is_chief, worker_dir)
    return _loop(run, on_call or (lambda step, warm: None)) if run else 0


def _loop(run, on_call):
  """Calls into the graph until max_steps or a stop; saves; exit status."""
  config, step = run.config, run.start
  clock = console.StepClock(step, config.global_batch, config.log_frequency)
  saved = time.monotonic()
  with run_control.GracefulStop(defer=True) as stop, \
      run.writer.as_default(), run.profile:
    run.profile.at(step)
    while step < config.max_steps:
      votes = run_control.stop_votes(stop.signum, time.monotonic() - saved
                                     >= config.save_checkpoint_secs)
      losses, times, ticks, votes, first = _call(run, step, clock, votes)
      run_control.check_finite(losses, step, config.train_dir)
      clock.log(step, losses, times, ticks, first_call=first,
                note=stop.take_caught())
      step += len(losses)
      run.profile.at(step)
      run.after_call(step)
      if step == run.start + 1:
        saved = time.monotonic()  # (the first call traced: not a reason)
      on_call(step, clock.warm is not None)
      line = clock.progress(step, config.max_steps, config.progress_secs)
      if line:
        print(line, flush=True)
      signum, save_now = run_control.read_votes(votes)
      if signum:
        if not stop.requested:
          print('%s: another worker was stopped by %s; saving and stopping' %
                (console.now(), signal.Signals(signum).name), flush=True)
        break
      if save_now and step < config.max_steps:
        checkpoints.save_checkpoint(run.manager, step)
        saved = time.monotonic()
    stop.say_caught()
    run.profile.stop()
    path = checkpoints.save_checkpoint(run.manager, step)
    run.writer.flush()
  print('%s: saved checkpoint %s at step %d' % (
      console.now(), path if run.is_chief else 'of this worker', step),
        flush=True)
  print(clock.summary(step), flush=True)
  signum = signum or stop.signum
  if signum and step < config.max_steps:
    print('%s: stopped by %s at step %d of %d; the same command resumes '
          'from %s' % (console.now(), signal.Signals(signum).name, step,
                       config.max_steps, path if run.is_chief else
                       tf.train.latest_checkpoint(config.train_dir)),
          flush=True)
  return 128 + signum if signum else 0


def _call(run, step, clock, votes):
  """One call into the graph from `step`: the step with summaries (every
  --summary_steps, and the first), or a graph loop of steps up to the next
  summary, profile boundary, max_steps or about CALL_SECS.

  Returns:
    (losses, times, ticks, votes, first): numpy arrays of the steps run, when
    each was ready (ticks: on time.monotonic()'s clock); whether it traced.
  """
  config, began = run.config, time.monotonic()
  if step == run.start or (step + 1) % config.summary_steps == 0:
    call = (summaries.write_graph if step == run.start and run.is_chief
            else lambda fn, a: fn(*a))
    out, times, votes = call(run.summary_step, (run.iterator, votes))
    run.pending_summary, first = out, step == run.start
    losses, times = np.array([float(out['total_loss'])]), np.array([times])
  else:
    to_summary = config.summary_steps - 1 - step % config.summary_steps
    n = min(config.steps_per_loop, config.max_steps - step, to_summary,
            (run.profile.until(step) or config.max_steps) - step,
            sys.maxsize if run.multi_worker else  # (workers' calls pair up)
            clock.steps_within(CALL_SECS))
    losses, times, votes = run.train_loop(
        run.iterator, tf.constant(n), votes,
        tf.constant(console.first_logged(step, config.log_frequency)),
        tf.constant(config.log_frequency))
    losses, times, first = losses.numpy(), times.numpy(), not run.looped
    if first:  # both training functions have now run once
      run.looped = True
      clock.warm = (step + n, time.monotonic())
    else:
      clock.call_took(n, time.monotonic() - began)
  now = time.monotonic()  # (the wall clock's stamps on the monotonic's)
  ticks = np.clip(times - time.time() + now, began, now)
  return losses, times, ticks, votes, first


@dataclasses.dataclass
class _Run:
  """What one training run holds between calls (made by _setup)."""
  config: object  # config.TrainConfig, the resumed run's seed in it
  is_chief: bool
  start: int
  manager: tf.train.CheckpointManager
  iterator: object  # the distributed tf.data iterator, or None
  train_loop: object
  summary_step: object
  summarize: object  # summarize(out, step, rate): writes a summary step's
  writer: object
  profile: summaries.Profile
  multi_worker: bool = False  # workers' calls must run the same steps
  looped: bool = False  # train_loop has run (traced) once
  pending_summary: dict = None  # outputs of a summary step, to write
  last_summary: tuple = None  # (step, time) of the last summaries, or start

  def after_call(self, step):
    """Writes the summaries of a summary step that just ran."""
    if self.pending_summary is None:
      return
    since, then = self.last_summary
    rate = (step - since) / max(time.monotonic() - then, 1e-9)
    self.summarize(self.pending_summary, tf.constant(step, tf.int64),
                   tf.constant(rate, tf.float32))
    self.pending_summary, self.last_summary = None, (step, time.monotonic())


def _setup(config, strategy, is_chief, worker_dir):
  """The model, resumed; the input; the graph functions; the run's summary
  writer and HParams; the start line. None when max_steps is reached."""
  data_set = config.data_set
  with strategy.scope():
    model = config.new_model()
    state = config.model_lib.TrainState(model, config.seed,
                               tf.as_dtype(config.precision),
                               config.global_batch, config.schedule)
  ckpt = tf.train.Checkpoint(model=model, state=state)
  latest = checkpoints.resume(ckpt, config.train_dir, repair=is_chief,
                              data_set=data_set.name, model=config.model_name)
  if latest:  # (its own seed; notes on a changed schedule)
    config = config.resumed(int(state.seed.numpy()), latest)
    if config.keeps_global_batch(int(state.global_batch.numpy()), latest):
      state.global_batch.assign(config.global_batch)  # --allow_new_batch
    print('Resuming from %s at step %d' % (latest,
                                          int(state.global_step.numpy())))
  else:  # a run from scratch: what the model sets from the data (adapt)
    interface.adapt(config.model_lib, model, config.input_lib,
                    config.data_dir, data_set)
  _, manager = checkpoints.checkpoint_manager(
      config.train_dir if is_chief else worker_dir, model=model, state=state,
      record=run_record.RunRecord(data_set.name, config.schedule._asdict(),
                                  config.model_name))
  start = int(state.global_step.numpy())
  if start >= config.max_steps:
    print('Step %d already reached max_steps %d; nothing to do' %
          (start, config.max_steps))
    return None
  feed, iterator = device_input.make_feed(
      config.data_dir, config.batch_size, config.seed, strategy,
      config.data_on_device, data_set, config.input_lib, start)
  train_loop, summary_step = make_train_loop(
      strategy, config.model_lib, model, state, config.global_batch, feed,
      config.jit_compile, config.slices)
  writer = (summaries.summary_writer(config.train_dir) if is_chief
            else tf.summary.create_noop_writer())

  @tf.function(autograph=False)
  def summarize(out, step, rate):
    summaries.write_summaries(out, model, state, step, rate,
                              config.model_lib, config.input_lib)

  if is_chief:
    values = config.hparams(dataset.fingerprint(config.data_dir, data_set))
    trial_id = '%s seed %d' % (os.path.abspath(config.train_dir),
                               config.seed)
    summaries.save_run_hparams(config.train_dir, values, trial_id)
    with writer.as_default():
      summaries.write_hparams(values, summaries.CONVNET_METRICS, trial_id)
  print(config.start_line(start), flush=True)
  return _Run(config=config, is_chief=is_chief, start=start, manager=manager,
              iterator=iterator, train_loop=train_loop,
              summary_step=summary_step, summarize=summarize, writer=writer,
              profile=summaries.Profile(config.profile_steps,
                                        config.train_dir, record=is_chief),
              multi_worker=isinstance(
                  strategy, tf.distribute.MultiWorkerMirroredStrategy),
              last_summary=(start, time.monotonic()))
