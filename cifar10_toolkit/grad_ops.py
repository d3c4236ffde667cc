"""What any model's training step does with its gradients.

  all_reduce(out)               gradients summed and loss terms averaged
                                over the replicas
  unscale(grads, scale, good)   float16's dynamic loss scaling: the
                                gradients of a scaled loss divided by the
                                scale; zero where any overflowed, the scale
                                halved then, doubled after GROWTH_STEPS
                                good steps (from INITIAL_LOSS_SCALE)

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
