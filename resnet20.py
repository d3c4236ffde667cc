"""ResNet-20 for CIFAR (He, Zhang, Ren and Sun, "Deep Residual Learning for
Image Recognition", 2016, section 4.2): a larger model of the toolkit's
model interface, beside the tutorial's convnet (--model resnet20).

The model and its training, in the order a training program chains them:

  model = Model(seed, num_classes, image_size)   weights, BN scales and
      offsets (params); BN statistics (stats); the mean image (input_mean)
  adapt(model, train_images)                the training set's mean image
  state = TrainState(model, seed, dtype, global_batch, schedule)   step,
      momentum, moving averages of params and stats
  logits, activations = inference(model, images, dtype, slices)   the
      model in inference mode: BN with its statistics (evaluation, export)
  losses = loss(model, logits, labels)      cross-entropy + weight decay
  out = training(model, state, images, labels, global_batch_size)   one
      step: BN on the batch, SGD with momentum, the statistics and the
      moving averages updated; update(gradients(...), all_reduce(...))
  correct = evaluation(logits, labels)      top-1 correct count
  use_moving_averages(model, state)         the averaged weights and
      statistics, to evaluate
  loss_averages(state)                      the losses' averages

Architecture (the paper's n = 3): a 3x3 convolution of 16 filters, then
three stages of three basic blocks (two 3x3 convolutions, each followed by
batch normalization; ReLU; an identity shortcut) of 16, 32 and 64 filters.
The first block of the second and third stages strides 2, and its shortcut
takes every other pixel and pads the channels with zeros (the paper's
option A). Global average pooling and a dense layer end it: 269,722
trainable parameters for 10 classes (0.27M), and 1,376 BN statistics.

Training is the paper's (SCHEDULE): SGD with momentum 0.9 from a learning
rate of 0.1, divided by 10 at 32,000 and 48,000 steps of batch 128 (counted
in epochs, so that another batch or data set keeps them), weight decay 1e-4
on the convolutions' and the dense layer's weights, 64,000 steps
(--max_steps 64000). Input: the training set's per-pixel mean subtracted
(adapt; the checkpoint keeps it); augmentation (INPUT): 4 pixels of zero
padding, a random 32x32 crop and a random horizontal flip.

Batch normalization under the toolkit's features (docs/extending.md):
  - the moving averages average the BN statistics with the weights (as
    timm's model EMA averages buffers), so that the averaged weights are
    evaluated with statistics of the same span;
  - --slices: one by default (AUTO_SLICES), BN by TensorFlow's fused
    kernels; with --slices N the slices are normalized together, with the
    statistics of the whole batch (each BN joins the slices' sums);
  - several replicas: each normalizes its own batch (as Keras' and
    PyTorch's BN do by default); the statistics kept are the first
    replica's;
  - resume: the statistics are variables of the model, in the checkpoint;
  - export: inference() normalizes with the statistics, frozen.
"""

import collections

import numpy as np
import tensorflow as tf

import cifar10_input
import convnet
from cifar10_toolkit import grad_ops

Schedule = collections.namedtuple('Schedule', [
    'learning_rate', 'first_decay_epoch', 'second_decay_epoch',
    'decay_factor', 'momentum', 'weight_decay', 'moving_average_decay',
    'train_size'])
# 32,000 and 48,000 steps of 128 of CIFAR-10's 50,000 images are 81.92 and
# 122.88 epochs; 64,000 steps are 163.84.
SCHEDULE = Schedule(learning_rate=0.1, first_decay_epoch=81.92,
                    second_decay_epoch=122.88, decay_factor=0.1,
                    momentum=0.9, weight_decay=1e-4,
                    moving_average_decay=0.9999, train_size=50000)
INPUT = cifar10_input.Augmentation(crop=(1, 1), pad=4, colour=False,
                                   standardize=False)
# --slices auto: one slice, whose BN runs TensorFlow's fused kernels (with
# oneDNN, faster than slices; --slices N still normalizes across them)
AUTO_SLICES = False
STAGES = (16, 32, 64)
BLOCKS = 3              # blocks per stage: 6 x 3 + 2 = 20 layers
BN_MOMENTUM = 0.9       # the statistics keep 0.9 of themselves each step
BN_EPSILON = 1e-5
LOSS_AVERAGE_DECAY = convnet.LOSS_AVERAGE_DECAY


def layers(num_classes=10, channels=3):
  """The convolutions and the dense layer: name -> weights' shape."""
  table = collections.OrderedDict(conv0=[3, 3, channels, STAGES[0]])
  width = STAGES[0]
  for s, filters in enumerate(STAGES):
    for b in range(BLOCKS):
      table['stage%d/block%d/conv1' % (s + 1, b + 1)] = [3, 3, width, filters]
      table['stage%d/block%d/conv2' % (s + 1, b + 1)] = [3, 3, filters,
                                                         filters]
      width = filters
  table['dense'] = [width, num_classes]
  return table


class Model(tf.Module):
  """ResNet-20's variables.

  Attributes:
    params: ordered dict name -> trainable tf.Variable: '<conv>/weights'
      (He-normal), '<conv>/bn/scale' (1), '<conv>/bn/offset' (0),
      'dense/weights', 'dense/biases'.
    stats: ordered dict '<conv>/bn/mean', '<conv>/bn/variance' -> the BN
      statistics (0 and 1 at first).
    input_mean: float32 [side, side, channels], the training set's mean
      image, subtracted from each input (0 until adapt() sets it).
    layers: layers().
  """

  def __init__(self, seed=0, num_classes=10, image_size=32, name='resnet20'):
    super().__init__(name=name)
    self.layers = layers(num_classes)
    params, stats = collections.OrderedDict(), collections.OrderedDict()
    for i, (layer, shape) in enumerate(self.layers.items()):
      fan_in = 1
      for d in shape[:-1]:
        fan_in *= d
      if layer == 'dense':  # PyTorch's default: uniform, +-1/sqrt(fan_in)
        bound = fan_in ** -0.5
        params['dense/weights'] = convnet.variable(
            tf.random.stateless_uniform(shape, [seed, i], -bound, bound),
            'dense/weights')
        params['dense/biases'] = convnet.variable(tf.zeros(shape[-1:]),
                                                  'dense/biases')
        continue
      params[layer + '/weights'] = convnet.variable(
          tf.random.stateless_normal(shape, [seed, i],
                                     stddev=(2.0 / fan_in) ** 0.5),
          layer + '/weights')
      for name, value in (('scale', 1.0), ('offset', 0.0)):
        params['%s/bn/%s' % (layer, name)] = convnet.variable(
            tf.fill(shape[-1:], value), '%s/bn/%s' % (layer, name))
      for name, value in (('mean', 0.0), ('variance', 1.0)):
        stats['%s/bn/%s' % (layer, name)] = convnet.variable(
            tf.fill(shape[-1:], value), '%s/bn/%s' % (layer, name),
            trainable=False)
    self.params, self.stats = params, stats
    self.input_mean = convnet.variable(
        tf.zeros([image_size, image_size, self.layers['conv0'][2]]),
        'input_mean', trainable=False)


def adapt(model, images):
  """Sets model.input_mean to the per-pixel mean of images, the training set
  (uint8 [N, side, side, channels], NumPy; centrally cropped to the model's
  side): once, before the first step of a run from scratch."""
  mean = np.mean(images, axis=0, dtype=np.float64)
  start = (mean.shape[0] - model.input_mean.shape[0]) // 2
  end = start + model.input_mean.shape[0]
  model.input_mean.assign(mean[start:end, start:end].astype(np.float32))


class TrainState(tf.Module):
  """What training changes besides the weights; saved with them.

  Attributes: those of convnet.TrainState (global_step, seed, global_batch,
  averages, loss_averages, loss_scale, good_steps, compute_dtype,
  schedule), the averages covering the BN statistics too; and momentum,
  name -> the SGD momentum of each parameter.
  """

  def __init__(self, model, seed=0, compute_dtype=tf.float32,
               global_batch=0, schedule=SCHEDULE, name='train_state'):
    super().__init__(name=name)
    self.schedule = schedule
    v = convnet.variable
    step = lambda name: v(0, name, dtype=tf.int64, trainable=False)
    self.global_step = step('global_step')
    self.seed = v(seed, 'seed', dtype=tf.int64, trainable=False)
    self.global_batch = v(global_batch, 'global_batch', dtype=tf.int64,
                          trainable=False)
    self.momentum = collections.OrderedDict(
        (k, v(tf.zeros_like(p), k + '/Momentum', trainable=False))
        for k, p in model.params.items())
    self.averages = collections.OrderedDict(
        (k, v(p, k + '/ExponentialMovingAverage', trainable=False))
        for k, p in list(model.params.items()) + list(model.stats.items()))
    self.loss_averages = collections.OrderedDict(
        (k, v(0.0, k + '/avg', trainable=False))
        for k in ('cross_entropy', 'weight_loss', 'total_loss'))
    self.compute_dtype = tf.as_dtype(compute_dtype)
    self.loss_scaling = self.compute_dtype == tf.float16
    self.loss_scale = v(grad_ops.INITIAL_LOSS_SCALE if self.loss_scaling
                        else 1.0, 'loss_scale', trainable=False)
    self.good_steps = step('good_steps')


def inference(model, images, compute_dtype=tf.float32, slices=1):
  """The model in inference mode: BN normalizes with model.stats.

  Args:
    model: a Model.
    images: float [batch, 32, 32, channels], pixels 0 to 255 (cifar10_input
      with INPUT).
    compute_dtype: tf.float32, or tf.bfloat16 / tf.float16 (variables stay
      float32; BN's statistics are applied in float32).
    slices: slices the batch is computed in (the same function).

  Returns:
    logits: float32 [batch, classes]; activations: ordered dict stage name
    -> its output.
  """
  logits, acts, _ = _forward(model, images, compute_dtype, slices, False)
  return logits, acts


def _forward(model, images, compute_dtype, slices, train):
  """The forward pass; with train, BN on the batch, whose statistics are
  returned (name -> (mean, variance) of each BN, float32)."""
  p = {k: tf.cast(v, compute_dtype) for k, v in model.params.items()
       if k.endswith('/weights') or k == 'dense/biases'}
  batch_stats = collections.OrderedDict()
  x = tf.cast(tf.cast(images, tf.float32) - model.input_mean, compute_dtype)
  xs = tf.split(x, slices) if slices > 1 else [x]

  def conv_bn(xs, layer, stride=1, relu=True):
    with tf.name_scope(layer):
      ys = [tf.nn.conv2d(x, p[layer + '/weights'], stride, 'SAME')
            for x in xs]
      bn = layer + '/bn/'
      if len(ys) == 1:  # TensorFlow's fused kernels, forward and backward
        y, mean, variance = _fused_batch_norm(
            ys[0], model.params[bn + 'scale'], model.params[bn + 'offset'],
            None if train else model.stats[bn + 'mean'],
            None if train else model.stats[bn + 'variance'])
        if train:
          batch_stats[layer] = (mean, variance)
        return [tf.nn.relu(y) if relu else y]
      if train:  # the moments of the whole batch, all slices together
        count = tf.cast(sum(tf.size(y) for y in ys) // ys[0].shape[-1],
                        tf.float32)
        mean = tf.add_n([tf.reduce_sum(tf.cast(y, tf.float32), [0, 1, 2])
                         for y in ys]) / count
        variance = tf.add_n([tf.reduce_sum(tf.square(
            tf.cast(y, tf.float32) - mean), [0, 1, 2]) for y in ys]) / count
        batch_stats[layer] = (mean, variance * count / (count - 1))
      else:
        mean, variance = model.stats[bn + 'mean'], model.stats[bn + 'variance']
      scale = model.params[bn + 'scale'] * tf.math.rsqrt(variance +
                                                          BN_EPSILON)
      offset = model.params[bn + 'offset'] - mean * scale
      scale, offset = tf.cast(scale, compute_dtype), tf.cast(offset,
                                                             compute_dtype)
      ys = [y * scale + offset for y in ys]
      return [tf.nn.relu(y) for y in ys] if relu else ys

  acts = collections.OrderedDict()
  xs = conv_bn(xs, 'conv0')
  for s, filters in enumerate(STAGES):
    for b in range(BLOCKS):
      name = 'stage%d/block%d/' % (s + 1, b + 1)
      stride = 2 if s > 0 and b == 0 else 1
      ys = conv_bn(conv_bn(xs, name + 'conv1', stride), name + 'conv2',
                   relu=False)
      if stride > 1:  # option A: subsample, pad the new channels with 0
        pad = (filters - xs[0].shape[-1]) // 2
        xs = [tf.pad(_every_other_pixel(x), [[0, 0], [0, 0], [0, 0],
                                             [pad, pad]]) for x in xs]
      xs = [tf.nn.relu(y + x) for x, y in zip(xs, ys)]
    acts['stage%d' % (s + 1)] = xs[0] if slices == 1 else tf.concat(xs, 0)
  with tf.name_scope('dense'):
    pooled = [tf.reduce_mean(x, [1, 2]) for x in xs]
    logits = [tf.matmul(x, p['dense/weights']) + p['dense/biases']
              for x in pooled]
  logits = logits[0] if slices == 1 else tf.concat(logits, 0)
  return tf.cast(logits, tf.float32), acts, batch_stats


def _every_other_pixel(x):
  """x[:, ::2, ::2, :], as a 1x1 average pool of stride 2: the same values
  and gradients, bit for bit, by pooling kernels, whose backward pass is far
  cheaper than a strided slice's (docs/performance.md)."""
  return tf.nn.avg_pool2d(x, 1, 2, 'VALID')


def _fused_batch_norm(x, scale, offset, mean=None, variance=None):
  """Batch normalization of x by TensorFlow's fused kernel: with the batch's
  moments when mean is None (training; returns them, the variance
  unbiased, as the statistics keep it), else with mean and variance.

  Returns:
    (normalized x in its dtype, mean, variance) float32 moments."""
  training = mean is None
  empty = tf.constant([], tf.float32)
  y, mean, variance = tf.raw_ops.FusedBatchNormV3(
      x=x, scale=scale, offset=offset,
      mean=empty if training else mean,
      variance=empty if training else variance, epsilon=BN_EPSILON,
      is_training=training)[:3]
  return y, mean, variance


def loss(model, logits, labels, schedule=SCHEDULE):
  """Cross-entropy plus weight decay (schedule.weight_decay times half the
  squared weights of the convolutions and the dense layer).

  Returns:
    ordered dict 'cross_entropy', 'weight_loss', 'total_loss' (float32).
  """
  losses = collections.OrderedDict()
  with tf.name_scope('cross_entropy'):
    losses['cross_entropy'] = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(labels, tf.int32), logits=logits))
  with tf.name_scope('weight_decay'):
    losses['weight_loss'] = schedule.weight_decay * tf.add_n([
        tf.nn.l2_loss(v) for k, v in model.params.items()
        if k.endswith('/weights')])
  losses['total_loss'] = tf.add_n(list(losses.values()), name='total_loss')
  return losses


def learning_rate(global_step, global_batch_size, schedule=SCHEDULE):
  """The paper's: learning_rate, times decay_factor from each decay epoch.

  Returns: float32 scalar."""
  steps_per_epoch = schedule.train_size / global_batch_size
  epoch = tf.cast(global_step, tf.float64) / steps_per_epoch
  decays = (tf.cast(epoch >= schedule.first_decay_epoch, tf.float32) +
            tf.cast(epoch >= schedule.second_decay_epoch, tf.float32))
  return schedule.learning_rate * tf.pow(schedule.decay_factor, decays)


def training(model, state, images, labels, global_batch_size,
             with_summaries=False, slices=1):
  """One step of training, in replica context: gradients() of this
  replica, summed over the replicas, then update().

  Returns:
    dict: the loss terms (averaged over replicas), 'learning_rate', and with
    with_summaries 'activations', 'gradients' and 'images'.
  """
  ctx = tf.distribute.get_replica_context()
  out = gradients(model, state, images, labels, ctx.num_replicas_in_sync,
                  with_summaries, slices)
  return update(model, state, out, global_batch_size,
                grad_ops.all_reduce(out))


def gradients(model, state, images, labels, replicas, with_summaries=False,
              slices=1):
  """The first half of training(): this replica's losses, gradients and
  BN statistics of its batch ('batch_stats')."""
  variables = list(model.params.values())
  with tf.GradientTape() as tape:
    logits, acts, batch_stats = _forward(model, images, state.compute_dtype,
                                         slices, True)
    with tf.name_scope('loss'):
      losses = loss(model, logits, labels, state.schedule)
      scaled = losses['total_loss'] / replicas
      if state.loss_scaling:
        scaled *= state.loss_scale
  with tf.name_scope('gradients'):
    out = {'losses': losses, 'gradients': tape.gradient(scaled, variables),
           'batch_stats': batch_stats}
  if with_summaries:
    out.update(activations=acts, images=images)
  return out


def update(model, state, out, global_batch_size, reduced):
  """The second half of training(): SGD with momentum, the BN statistics,
  the moving averages. Returns training()'s result."""
  grads, losses = reduced
  if state.loss_scaling:
    with tf.name_scope('loss_scaling'):
      grads = grad_ops.unscale(grads, state.loss_scale, state.good_steps)
  schedule = state.schedule
  with tf.name_scope('sgd_momentum'):
    lr = learning_rate(state.global_step, global_batch_size, schedule)
    for (name, v), g in zip(model.params.items(), grads):
      m = state.momentum[name]
      m.assign(schedule.momentum * m + g)
      v.assign_sub(lr * m)
    step = state.global_step.assign_add(1)
  with tf.name_scope('batch_norm_statistics'):
    for layer, (mean, variance) in out['batch_stats'].items():
      for name, value in (('mean', mean), ('variance', variance)):
        stat = model.stats['%s/bn/%s' % (layer, name)]
        stat.assign(BN_MOMENTUM * stat + (1 - BN_MOMENTUM) * value)
  with tf.name_scope('moving_averages'):
    decay = convnet.moving_average_decay(step, schedule)
    current = dict(model.params, **model.stats)
    for name, avg in state.averages.items():
      avg.assign_sub((1.0 - decay) * (avg - current[name]))
  return grad_ops.step_result(model.params, out, grads, losses, lr,
                              state.loss_averages, LOSS_AVERAGE_DECAY)


loss_averages = convnet.loss_averages
evaluation = convnet.evaluation


def use_moving_averages(model, state):
  """Loads the moving averages of the weights and of the BN statistics
  into the model (for evaluation and export)."""
  for name, v in list(model.params.items()) + list(model.stats.items()):
    v.assign(state.averages[name])
