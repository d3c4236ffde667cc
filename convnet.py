"""The TensorFlow CIFAR-10 tutorial's convolutional network, in TensorFlow 2.

Functions and classes, in the order training chains them:

  model = ConvNet(seed)                   the variables, created once
  state = TrainState(model)               global step, moving averages, ...
  logits, activations = inference(model, images)
  losses = loss(model, logits, labels)    cross-entropy + weight decay
  losses = training(model, state, images, labels, global_batch_size)
      one step of the tutorial's train(): learning-rate schedule, gradient
      descent, loss averages, variable moving averages; strategy-ready.
  correct = evaluation(logits, labels)    top-1 correct count
  use_moving_averages(model, state)       load the averaged weights to evaluate
  Classifier(model).serve(uint8 images)   probabilities and class names (the
      serving function of an exported model; cifar10_export.py)

Architecture, initialisation, weight decays and schedule are those of
docs/model.md: conv1 -> pool1 -> norm1 -> conv2 -> norm2 -> pool2 ->
local3 -> local4 -> softmax_linear, 1,068,298 trainable parameters.
"""

import collections
import contextlib

import tensorflow as tf

import cifar10_data
import cifar10_input
import lrn

# Schedule and model constants (the tutorial's).
NUM_CLASSES = cifar10_data.NUM_CLASSES
NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN = cifar10_data.NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN
MOVING_AVERAGE_DECAY = 0.9999     # decay of the variables' moving averages
NUM_EPOCHS_PER_DECAY = 350.0      # epochs after which the learning rate decays
LEARNING_RATE_DECAY_FACTOR = 0.1  # learning-rate decay factor
INITIAL_LEARNING_RATE = 0.1       # initial learning rate
LOSS_AVERAGE_DECAY = 0.9          # decay of the loss terms' moving averages

# Mixed precision: dynamic loss scaling.
INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000

# name: (shape, weights stddev, weight decay, bias init); ConvNet's layers.
LAYERS = collections.OrderedDict([
    ('conv1', ([5, 5, 3, 64], 5e-2, 0.0, 0.0)),
    ('conv2', ([5, 5, 64, 64], 5e-2, 0.0, 0.1)),
    ('local3', ([6 * 6 * 64, 384], 0.04, 0.004, 0.1)),
    ('local4', ([384, 192], 0.04, 0.004, 0.1)),
    ('softmax_linear', ([192, NUM_CLASSES], 1 / 192.0, 0.0, 0.0)),
])

# Variables that every replica updates identically (gradients are summed
# across replicas first): MirroredStrategy keeps the first replica's update.
_SYNC = dict(synchronization=tf.VariableSynchronization.ON_WRITE,
             aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class ConvNet(tf.Module):
  """The tutorial's model: weights and biases of five layers.

  Attributes:
    params: ordered dict 'conv1/weights', 'conv1/biases', ... -> tf.Variable.
  """

  def __init__(self, seed=0, name='convnet'):
    """Creates the variables, initialised as docs/model.md says.

    Args:
      seed: int; weights are drawn from stateless truncated normals seeded by
        (seed, layer index), so a seed fixes the initial model.
      name: module name.
    """
    super().__init__(name=name)
    params = collections.OrderedDict()
    for i, (layer, (shape, stddev, _, bias)) in enumerate(LAYERS.items()):
      init = tf.random.stateless_truncated_normal(shape, [seed, i],
                                                  stddev=stddev)
      params[layer + '/weights'] = tf.Variable(init, name=layer + '/weights',
                                               **_SYNC)
      params[layer + '/biases'] = tf.Variable(
          tf.fill([shape[-1]], bias), name=layer + '/biases', **_SYNC)
    self.params = params

  def __call__(self, images, compute_dtype=tf.float32):
    return inference(self, images, compute_dtype)


class _SharedScopes:
  """Name scopes opened again under the same name, not as 'conv1_1'.

  The slices of sharded_inference each build the layers; with one of these
  their operations fall into one box per layer in TensorBoard's graph
  (train_step/conv1 holds every slice's convolution), as the tutorial drew it.
  """

  def __init__(self):
    self.full = {}

  @contextlib.contextmanager
  def __call__(self, name):
    with tf.name_scope(self.full.get(name, name)) as full:
      self.full.setdefault(name, full)
      yield full


def inference(model, images, compute_dtype=tf.float32, scope=tf.name_scope):
  """Builds the forward pass.

  Args:
    model: a ConvNet.
    images: float [batch, 24, 24, 3] from cifar10_input.
    compute_dtype: tf.float32, or tf.bfloat16 / tf.float16 for mixed
      precision (variables stay float32 and are cast for the computation).
    scope: opens each layer's name scope (sharded_inference shares them).

  Returns:
    logits: float32 [batch, 10];
    activations: ordered dict layer name -> activations after its ReLU.
  """
  with scope('params'):  # the weights in the compute dtype
    p = {k: tf.cast(v, compute_dtype) for k, v in model.params.items()}
  acts = collections.OrderedDict()
  x = tf.cast(images, compute_dtype)

  def conv(x, layer):
    """The convolution, and its layer's bias: added, with the ReLU, by norm."""
    with scope(layer):
      y = tf.nn.conv2d(x, p[layer + '/weights'], 1, 'SAME')
      b = p[layer + '/biases']
      acts[layer] = tf.nn.relu(y + b)  # for the summaries only
    return y, b

  def pool(x, name):
    with scope(name):
      return tf.nn.max_pool2d(x, 3, 2, 'SAME')

  def norm(y, b, name):  # lrn.local_response_normalization(relu(y + b))
    with scope(name):  # (computed in float32 whatever the dtype)
      return lrn.local_response_normalization(y, b)

  def local(x, layer, relu=True):
    with scope(layer):
      if layer == 'local3':  # the pooled maps as one vector per image
        x = tf.reshape(x, [tf.shape(x)[0], LAYERS['local3'][0][0]])
      y = tf.matmul(x, p[layer + '/weights']) + p[layer + '/biases']
      acts[layer] = tf.nn.relu(y) if relu else y
    return acts[layer]

  # conv1 -> pool1 -> norm1: pool(relu(y + b)) == relu(pool(y) + b), since
  # max-pooling commutes with a per-channel bias and with the ReLU (both
  # non-decreasing), values and gradients alike: pooling first adds and
  # clips 4x fewer values, inside norm1's loop.
  y, b = conv(x, 'conv1')
  x = norm(pool(y, 'pool1'), b, 'norm1')
  y, b = conv(x, 'conv2')
  x = pool(norm(y, b, 'norm2'), 'pool2')
  x = local(local(x, 'local3'), 'local4')
  logits = local(x, 'softmax_linear', relu=False)
  return tf.cast(logits, tf.float32), acts


def reference_inference(model, images):
  """The tutorial's forward pass, written plainly with TensorFlow's own ops
  (ReLU before pooling, tf.nn.local_response_normalization): the
  definition that inference() and sharded_inference() compute faster
  (tests compare logits and gradients). Float32 only; not used to train.

  Returns:
    logits float32 [batch, 10].
  """
  p = model.params
  norm = lambda x: tf.nn.local_response_normalization(x, **lrn.LRN)
  pool = lambda x: tf.nn.max_pool2d(x, 3, 2, 'SAME')
  conv = lambda x, l: tf.nn.relu(tf.nn.conv2d(x, p[l + '/weights'], 1, 'SAME')
                                 + p[l + '/biases'])
  x = norm(pool(conv(images, 'conv1')))
  x = pool(norm(conv(x, 'conv2')))
  x = tf.reshape(x, [tf.shape(x)[0], -1])
  for layer in ('local3', 'local4'):
    x = tf.nn.relu(tf.matmul(x, p[layer + '/weights']) + p[layer + '/biases'])
  return tf.matmul(x, p['softmax_linear/weights']) + p['softmax_linear/biases']


def sharded_inference(model, images, compute_dtype=tf.float32, shards=1):
  """inference() on `shards` equal slices of the batch, joined again.

  The slices share no operation until their logits (and, backwards, their
  weight gradients) are joined, so with single-threaded kernels each core
  computes one slice at a time: on CPUs with few cores this keeps every core
  busy, where splitting each kernel across the cores leaves them idle in
  turn. The function computed is inference()'s.

  Args:
    model: a ConvNet.
    images: float [batch, 24, 24, 3]; batch a multiple of shards.
    compute_dtype: as for inference().
    shards: number of slices (1: inference() itself).

  Returns:
    logits and activations as inference() returns them, for the whole batch.
  """
  if shards == 1:
    return inference(model, images, compute_dtype)
  scope = _SharedScopes()
  with scope('slices'):
    parts = tf.split(images, shards)
  outputs = [inference(model, part, compute_dtype, scope) for part in parts]
  with scope('slices'):
    logits = tf.concat([o[0] for o in outputs], 0)
    acts = collections.OrderedDict(
        (k, tf.concat([o[1][k] for o in outputs], 0)) for k in outputs[0][1])
  return logits, acts


def loss(model, logits, labels):
  """Cross-entropy plus weight decay, each term kept for the summaries.

  Args:
    model: a ConvNet.
    logits: float32 [batch, 10] from inference().
    labels: int [batch].

  Returns:
    ordered dict: 'cross_entropy', '<layer>/weight_loss' for each layer with
    a weight decay, and 'total_loss', their sum (all float32 scalars).
  """
  losses = collections.OrderedDict()
  with tf.name_scope('cross_entropy'):
    losses['cross_entropy'] = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(labels, tf.int32), logits=logits))
  with tf.name_scope('weight_decay'):
    for layer, (_, _, wd, _) in LAYERS.items():
      if wd:
        losses[layer + '/weight_loss'] = wd * tf.nn.l2_loss(
            model.params[layer + '/weights'])
  losses['total_loss'] = tf.add_n(list(losses.values()), name='total_loss')
  return losses


def learning_rate(global_step, global_batch_size):
  """The tutorial's schedule: 0.1, times 0.1 every 350 epochs (staircase).

  Args:
    global_step: int scalar, steps taken.
    global_batch_size: examples per step (all replicas).

  Returns:
    float32 scalar learning rate.
  """
  batches_per_epoch = NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN / global_batch_size
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
                                   trainable=False, **_SYNC)
    self.seed = tf.Variable(seed, dtype=tf.int64, name='seed',
                            trainable=False, **_SYNC)
    self.averages = collections.OrderedDict(
        (k, tf.Variable(v, name=k + '/ExponentialMovingAverage',
                        trainable=False, **_SYNC))
        for k, v in model.params.items())
    names = ['cross_entropy'] + [l + '/weight_loss' for l, s in LAYERS.items()
                                 if s[2]] + ['total_loss']
    self.loss_averages = collections.OrderedDict(
        (k, tf.Variable(0.0, name=k + '/avg', trainable=False, **_SYNC))
        for k in names)
    self.compute_dtype = tf.as_dtype(compute_dtype)
    self.loss_scaling = self.compute_dtype == tf.float16
    self.loss_scale = tf.Variable(
        INITIAL_LOSS_SCALE if self.loss_scaling else 1.0, name='loss_scale',
        trainable=False, **_SYNC)
    self.good_steps = tf.Variable(0, dtype=tf.int64, name='good_steps',
                                  trainable=False, **_SYNC)


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
    model: a ConvNet.
    state: its TrainState.
    images, labels: this replica's batch.
    global_batch_size: examples per step over all replicas (for the schedule).
    with_aux: also return activations and gradients (for summaries).
    shards: compute the batch in this many independent slices
      (sharded_inference; the same step).

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
    logits, acts = sharded_inference(model, images, state.compute_dtype,
                                     shards)
    with tf.name_scope('loss'):
      losses = loss(model, logits, labels)
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


def evaluation(logits, labels):
  """Number of examples whose label is the top-1 prediction.

  Args:
    logits: float [batch, 10].
    labels: int [batch].

  Returns:
    int32 scalar count of correct predictions.
  """
  hits = tf.nn.in_top_k(tf.cast(labels, tf.int32), logits, 1)
  return tf.reduce_sum(tf.cast(hits, tf.int32))


def use_moving_averages(model, state):
  """Loads the variables' moving averages into the model (for evaluation)."""
  for name, v in model.params.items():
    v.assign(state.averages[name])


class Classifier(tf.Module):
  """The trained model as a function of images: what export and classify use.

  serve(images uint8 [N, 32, 32, 3]) -> {'probabilities': float32 [N, 10],
  'classes': int32 [N], 'class_names': string [N]}: the evaluator's central
  24x24 crop and standardization, inference, softmax. Saved as a SavedModel
  with serve as its serving signature.
  """

  def __init__(self, model, name='cifar10_classifier'):
    super().__init__(name=name)
    self.model = model
    self.class_names = tf.constant(cifar10_data.CLASS_NAMES)

  @tf.function(input_signature=[tf.TensorSpec(
      [None, cifar10_data.ORIGINAL_SIZE, cifar10_data.ORIGINAL_SIZE,
       cifar10_data.NUM_CHANNELS], tf.uint8, name='images')])
  def serve(self, images):
    logits, _ = inference(self.model,
                          cifar10_input.central_crop_and_standardize(images))
    classes = tf.argmax(logits, axis=1, output_type=tf.int32)
    return {'probabilities': tf.nn.softmax(logits), 'classes': classes,
            'class_names': tf.gather(self.class_names, classes)}
