"""The tutorial's training step for the convnet, in replica context.

  state = TrainState(model, seed, compute_dtype)   global step, seed, moving
                                                   averages, loss scale
  out = training(model, state, images, labels, global_batch_size)
      = update(gradients(...), reduce_out(...)): loss and gradients of this
      replica, summed over replicas, the SGD step with the schedule
      (learning_rate), the moving averages (moving_average_decay)
  loss_averages(state)                             for the summaries
"""

import collections

import tensorflow as tf

import convnet

# The schedule and the averages (the tutorial's).
MOVING_AVERAGE_DECAY = 0.9999     # decay of the variables' moving averages
NUM_EPOCHS_PER_DECAY = 350.0      # epochs after which the learning rate decays
LEARNING_RATE_DECAY_FACTOR = 0.1  # learning-rate decay factor
INITIAL_LEARNING_RATE = 0.1       # initial learning rate
LOSS_AVERAGE_DECAY = 0.9          # decay of the loss terms' moving averages

# Mixed precision: dynamic loss scaling.
INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000


def learning_rate(global_step, global_batch_size):
  """The tutorial's schedule: 0.1, times 0.1 every 350 epochs (staircase).

  Args:
    global_step: int scalar, steps taken.
    global_batch_size: examples per step (all replicas).

  Returns:
    float32 scalar learning rate.
  """
  batches_per_epoch = convnet.NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN / global_batch_size
  decay_steps = int(batches_per_epoch * NUM_EPOCHS_PER_DECAY)
  decays = tf.math.floordiv(tf.cast(global_step, tf.int64), decay_steps)
  return INITIAL_LEARNING_RATE * tf.pow(LEARNING_RATE_DECAY_FACTOR,
                                        tf.cast(decays, tf.float32))


def moving_average_decay(global_step):
  """min(0.9999, (1 + step) / (10 + step)): the tutorial's num_updates decay."""
  step = tf.cast(global_step, tf.float32)
  return tf.minimum(MOVING_AVERAGE_DECAY, (1.0 + step) / (10.0 + step))


class TrainState(tf.Module):
  """What training changes besides the weights; saved with them.

  Attributes:
    global_step: int64 steps taken.
    seed: int64 seed of the run's input order (kept so a resumed run
      continues the same data stream).
    averages: name -> moving average of each of the model's variables.
    loss_averages: name -> zero-debiased moving average of each loss term.
    loss_scale, good_steps: dynamic loss scaling (float16 only: bfloat16
      has float32's exponent range and needs none).
    compute_dtype: float32, bfloat16 or float16 (not saved: a run may resume
      in another precision).
  """

  def __init__(self, model, seed=0, compute_dtype=tf.float32,
               name='train_state'):
    super().__init__(name=name)
    self.global_step = tf.Variable(0, dtype=tf.int64, name='global_step',
                                   trainable=False, **convnet._SYNC)
    self.seed = tf.Variable(seed, dtype=tf.int64, name='seed',
                            trainable=False, **convnet._SYNC)
    self.averages = collections.OrderedDict(
        (k, tf.Variable(v, name=k + '/ExponentialMovingAverage',
                        trainable=False, **convnet._SYNC))
        for k, v in model.params.items())
    names = ['cross_entropy'] + [
        l + '/weight_loss' for l, s in convnet.LAYERS.items()
                                 if s[2]] + ['total_loss']
    self.loss_averages = collections.OrderedDict(
        (k,
         tf.Variable(0.0, name=k + '/avg', trainable=False, **convnet._SYNC))
        for k in names)
    self.compute_dtype = tf.as_dtype(compute_dtype)
    self.loss_scaling = self.compute_dtype == tf.float16
    self.loss_scale = tf.Variable(
        INITIAL_LOSS_SCALE if self.loss_scaling else 1.0, name='loss_scale',
        trainable=False, **convnet._SYNC)
    self.good_steps = tf.Variable(0, dtype=tf.int64, name='good_steps',
                                  trainable=False, **convnet._SYNC)


def training(model, state, images, labels, global_batch_size,
             with_aux=False, shards=1):
  """One step of the tutorial's train(), in replica context.

  Each replica computes the loss of its own batch divided by the number of
  replicas (per-replica loss scaling); gradients are summed across replicas,
  so the update equals that of one device on the combined batch, and applied
  once with plain gradient descent. Then the global step advances, the
  variables' moving averages (decay min(0.9999, (1+step)/(10+step)), step
  counted after this update) and the losses' averages (decay 0.9,
  zero-debiased) are updated. With float16 compute the loss is multiplied by
  a dynamic loss scale; a step whose gradients overflow is skipped and the
  scale halved; it doubles after 2000 good steps.

  Args:
    model: a convnet.ConvNet.
    state: its TrainState.
    images, labels: this replica's batch.
    global_batch_size: examples per step over all replicas (for the schedule).
    with_aux: also return activations and gradients (for summaries).
    shards: compute the batch in this many independent slices
      (convnet.sharded_inference; the same step).

  Returns:
    dict: the loss terms (averaged over replicas), 'learning_rate', and with
    with_aux 'activations' and 'gradients' (this replica's).
  """
  ctx = tf.distribute.get_replica_context()
  out = gradients(model, state, images, labels, ctx.num_replicas_in_sync,
                  with_aux, shards)
  return update(model, state, out, global_batch_size, reduce_out(out))


def gradients(model, state, images, labels, replicas, with_aux=False,
              shards=1):
  """The first half of training(): this replica's losses and gradients.

  Returns:
    dict: 'losses' (name -> this replica's loss terms), 'gradients' (list,
    of the loss divided by replicas, times the loss scale with float16),
    with with_aux 'activations' and 'images'.
  """
  variables = list(model.params.values())
  with tf.GradientTape() as tape:
    logits, acts = convnet.sharded_inference(model, images,
                                             state.compute_dtype, shards)
    with tf.name_scope('loss'):
      losses = convnet.loss(model, logits, labels)
      scaled = losses['total_loss'] / replicas
      if state.loss_scaling:
        scaled *= state.loss_scale
  with tf.name_scope('gradients'):
    out = {'losses': losses, 'gradients': tape.gradient(scaled, variables)}
  if with_aux:
    out.update(activations=acts, images=images)
  return out


def reduce_out(out):
  """The cross-replica part of training(): (gradients summed, loss terms
  averaged) over the replicas, in replica context."""
  ctx = tf.distribute.get_replica_context()
  with tf.name_scope('all_reduce'):
    grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, out['gradients'])
    losses = collections.OrderedDict(
        zip(out['losses'], ctx.all_reduce(tf.distribute.ReduceOp.MEAN,
                                          list(out['losses'].values()))))
  return grads, losses


def update(model, state, out, global_batch_size, reduced):
  """The second half of training(): loss scaling, the SGD update, the
  moving averages.

  Args:
    out: gradients()'s result.
    reduced: reduce_out(out).

  Returns:
    training()'s result.
  """
  grads, losses = reduced
  if state.loss_scaling:  # (float32 and bfloat16: no scale, no check)
    with tf.name_scope('loss_scaling'):
      grads = [g / state.loss_scale for g in grads]
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                              for g in grads])
      grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
      grow = tf.logical_and(finite,
                            state.good_steps + 1 >= LOSS_SCALE_GROWTH_STEPS)
      state.loss_scale.assign(tf.where(
          finite, tf.where(grow, state.loss_scale * 2, state.loss_scale),
          tf.maximum(state.loss_scale / 2, 1.0)))
      state.good_steps.assign(tf.where(finite & ~grow, state.good_steps + 1,
                                       0))
  with tf.name_scope('sgd'):
    lr = learning_rate(state.global_step, global_batch_size)
    for v, g in zip(model.params.values(), grads):
      v.assign_sub(lr * g)
    step = state.global_step.assign_add(1)
  with tf.name_scope('moving_averages'):
    decay = moving_average_decay(step)
    for name, v in model.params.items():
      avg = state.averages[name]
      avg.assign_sub((1.0 - decay) * (avg - v))
  with tf.name_scope('loss_averages'):
    for name, value in losses.items():
      avg = state.loss_averages[name]
      avg.assign(LOSS_AVERAGE_DECAY * avg + (1 - LOSS_AVERAGE_DECAY) * value)
  result = dict(losses, learning_rate=lr)
  if 'activations' in out:
    result['activations'] = out['activations']
    result['gradients'] = collections.OrderedDict(zip(model.params, grads))
    result['images'] = out['images']
  return result


def loss_averages(state):
  """The zero-debiased moving averages of the loss terms, name -> value."""
  bias = 1.0 - LOSS_AVERAGE_DECAY ** tf.cast(state.global_step, tf.float32)
  return {k: v / tf.maximum(bias, 1e-8) for k, v in state.loss_averages.items()}
