"""What any model's training step does with its gradients.

  all_reduce(out)               gradients summed and loss terms averaged
                                over the replicas
  unscale(grads, scale, good)   float16's dynamic loss scaling: the
                                gradients of a scaled loss divided by the
                                scale; zero where any overflowed, the scale
                                halved then, doubled after GROWTH_STEPS
                                good steps (from INITIAL_LOSS_SCALE)
  step_result(...)              a step's end: the loss terms' moving
                                averages, and what training() returns

bfloat16 has float32's exponent range and needs no loss scaling.
"""

import collections

import tensorflow as tf

INITIAL_LOSS_SCALE = 2.0 ** 15
GROWTH_STEPS = 2000


def all_reduce(out):
  """The cross-replica part of a step, in replica context.

  Args:
    out: dict with 'gradients' (list) and 'losses' (name -> loss term) of
      this replica.

  Returns:
    (gradients summed, ordered dict of loss terms averaged) over replicas.
  """
  ctx = tf.distribute.get_replica_context()
  with tf.name_scope('all_reduce'):
    grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, out['gradients'])
    losses = collections.OrderedDict(
        zip(out['losses'], ctx.all_reduce(tf.distribute.ReduceOp.MEAN,
                                          list(out['losses'].values()))))
  return grads, losses


def unscale(grads, loss_scale, good_steps):
  """The gradients of a loss that was multiplied by loss_scale.

  Args:
    grads: list of gradient tensors.
    loss_scale: float32 variable, updated: halved (not below 1) after a
      step whose gradients overflowed, doubled after GROWTH_STEPS good ones.
    good_steps: int64 variable counting the good steps since a change.

  Returns:
    The gradients divided by the scale, all zero when any is not finite
    (the step then changes nothing).
  """
  grads = [g / loss_scale for g in grads]
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                          for g in grads])
  grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
  grow = tf.logical_and(finite, good_steps + 1 >= GROWTH_STEPS)
  loss_scale.assign(tf.where(
      finite, tf.where(grow, loss_scale * 2, loss_scale),
      tf.maximum(loss_scale / 2, 1.0)))
  good_steps.assign(tf.where(finite & ~grow, good_steps + 1, 0))
  return grads


def step_result(params, out, grads, losses, lr, loss_averages, decay):
  """The end of a model's update(): the loss terms' moving averages, and
  training()'s result.

  Args:
    params: the model's name -> variable (the gradients' names).
    out: gradients()'s result (with summaries: 'activations', 'images').
    grads, losses: as all-reduced (the gradients unscaled).
    lr: the step's learning rate.
    loss_averages: name -> variable of each loss term's average.
    decay: their decay.

  Returns:
    dict: the loss terms, 'learning_rate', and with summaries 'activations',
    'images' and 'gradients' (name -> gradient).
  """
  with tf.name_scope('loss_averages'):
    for name, value in losses.items():
      avg = loss_averages[name]
      avg.assign(decay * avg + (1 - decay) * value)
  result = dict(losses, learning_rate=lr)
  if 'activations' in out:
    result.update(activations=out['activations'], images=out['images'],
                  gradients=collections.OrderedDict(zip(params, grads)))
  return result
