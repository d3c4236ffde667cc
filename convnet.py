"""The TensorFlow CIFAR-10 tutorial's convolutional network, in TensorFlow 2.

The model and its training, in the order a training program chains them
(the model interface of cifar10_toolkit.interface; --model convnet):

  model = ConvNet(seed, num_classes, image_size)   the variables (Model)
  state = TrainState(model, seed, dtype, global_batch, schedule)
  logits, activations = inference(model, images, dtype, slices)
  losses = loss(model, logits, labels)      cross-entropy + weight decay
  out = training(model, state, images, labels, global_batch_size)
      the tutorial's train(): SGD on the schedule (learning_rate), the
      moving averages; update(gradients(...), grad_ops.all_reduce(...))
  correct = evaluation(logits, labels)      top-1 correct count
  use_moving_averages(model, state)         the averaged weights, to evaluate

reference_inference(model, images) is the tutorial's forward pass written
plainly; inference() computes the same function faster (the LRN kernels of
cifar10_toolkit.lrn, slices of the batch side by side). Another model
module may reuse TrainState, loss, training and the rest with a Model that
has `params` and `layers` as ConvNet's (docs/extending.md).

Architecture (NETWORK, layers()), initialisation, weight decays and
schedule are those of docs/model.md: 1,068,298 parameters on CIFAR-10.
"""

import collections

import tensorflow as tf

from cifar10_toolkit import grad_ops
from cifar10_toolkit import lrn
from cifar10_toolkit import summaries

# The schedule (the tutorial's values; each a flag of the training scripts):
# the rate times decay_factor every epochs_per_decay epochs of train_size.
Schedule = collections.namedtuple('Schedule', [
    'learning_rate', 'epochs_per_decay', 'decay_factor',
    'moving_average_decay', 'train_size'])
SCHEDULE = Schedule(learning_rate=0.1, epochs_per_decay=350.0,
                    decay_factor=0.1, moving_average_decay=0.9999,
                    train_size=50000)
LOSS_AVERAGE_DECAY = 0.9          # decay of the loss terms' moving averages

# The network in order, as the tutorial names it: a layer of layers() (by
# its weights' rank: a convolution, 4; locally connected, 3 (convolve());
# fully connected, 2), 'pool...' (3x3 max-pool, stride 2) or 'norm...' (the
# tutorial's LRN). inference() and reference_inference() both walk it; the
# last layer gives the logits.
NETWORK = ('conv1', 'pool1', 'norm1', 'conv2', 'norm2', 'pool2', 'local3',
           'local4', 'softmax_linear')


def layers(num_classes=10, image_size=24, channels=3):
  """ConvNet's layers: name -> (shape, weights stddev, weight decay, bias
  init). local3 takes the last convolution's maps, of the side that
  NETWORK's SAME pools of stride 2 leave of an image_size crop (6 x 6 x 64
  of 24 x 24); softmax_linear has a unit per class."""
  side = -(-image_size // 2 ** sum(n.startswith('pool') for n in NETWORK))
  convs = [('conv1', ([5, 5, channels, 64], 5e-2, 0.0, 0.0)),
           ('conv2', ([5, 5, 64, 64], 5e-2, 0.0, 0.1))]
  flat = side * side * convs[-1][1][0][-1]
  return collections.OrderedDict(convs + [
      ('local3', ([flat, 384], 0.04, 0.004, 0.1)),
      ('local4', ([384, 192], 0.04, 0.004, 0.1)),
      ('softmax_linear', ([192, num_classes], 1 / 192.0, 0.0, 0.0))])


LAYERS = layers()  # the tutorial's, on CIFAR-10

# Variables that every replica updates identically (gradients are summed
# across replicas first): MirroredStrategy keeps the first replica's update.
_SYNC = dict(synchronization=tf.VariableSynchronization.ON_WRITE,
             aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def variable(value, name, **kwargs):
  """A tf.Variable of value that the replicas update as one (_SYNC)."""
  return tf.Variable(value, name=name, **_SYNC, **kwargs)


class ConvNet(tf.Module):
  """The tutorial's model: weights and biases of five layers.

  Attributes:
    params: ordered dict 'conv1/weights', 'conv1/biases', ... -> tf.Variable.
    layers: the layer table (layers()).
  """

  def __init__(self, seed=0, num_classes=10, image_size=24, name='convnet'):
    """Creates the variables, initialised as docs/model.md says.

    Args:
      seed: int; weights are drawn from stateless truncated normals seeded by
        (seed, layer index), so a seed fixes the initial model.
      num_classes: classes of the data set (units of softmax_linear).
      image_size: side of the square crops fed to the network.
      name: module name.
    """
    super().__init__(name=name)
    self.layers = layers(num_classes, image_size)
    params = collections.OrderedDict()
    for i, (layer, (shape, stddev, _, bias)) in enumerate(
        self.layers.items()):
      params[layer + '/weights'] = variable(
          tf.random.stateless_truncated_normal(shape, [seed, i],
                                               stddev=stddev),
          layer + '/weights')
      params[layer + '/biases'] = variable(tf.fill([shape[-1]], bias),
                                           layer + '/biases')
    self.params = params


Model = ConvNet  # the interface's name


class TrainState(tf.Module):
  """What training changes besides the weights; saved with them.

  Attributes:
    global_step: int64 steps taken.
    seed, global_batch: int64 seed of the input order and examples per step
      (a resumed run keeps both: the same data stream and schedule).
    averages, loss_averages: name -> moving average of each variable, and
      of each loss term (zero-debiased by loss_averages()).
    loss_scale, good_steps: dynamic loss scaling (float16 only: bfloat16
      has float32's exponent range).
    compute_dtype, schedule: not saved (a run may resume in another
      precision; the checkpoint's run record keeps the schedule).
  """

  def __init__(self, model, seed=0, compute_dtype=tf.float32,
               global_batch=0, schedule=SCHEDULE, name='train_state'):
    super().__init__(name=name)
    self.schedule = schedule
    step = lambda name: variable(0, name, dtype=tf.int64, trainable=False)
    self.global_step = step('global_step')
    self.seed = variable(seed, 'seed', dtype=tf.int64, trainable=False)
    self.global_batch = variable(global_batch, 'global_batch',
                                 dtype=tf.int64, trainable=False)
    self.averages = collections.OrderedDict(
        (k, variable(v, k + '/ExponentialMovingAverage', trainable=False))
        for k, v in model.params.items())
    names = ['cross_entropy'] + [layer + '/weight_loss' for layer, spec in
                                 model.layers.items() if spec[2]]
    names.append('total_loss')
    self.loss_averages = collections.OrderedDict(
        (k, variable(0.0, k + '/avg', trainable=False)) for k in names)
    self.compute_dtype = tf.as_dtype(compute_dtype)
    self.loss_scaling = self.compute_dtype == tf.float16
    self.loss_scale = variable(
        grad_ops.INITIAL_LOSS_SCALE if self.loss_scaling else 1.0,
        'loss_scale', trainable=False)
    self.good_steps = step('good_steps')


def inference(model, images, compute_dtype=tf.float32, slices=1):
  """Builds the forward pass.

  With slices > 1 the batch is cut into equal slices that share no
  operation until their logits (backwards, their weight gradients) are
  joined, keeping cores busy with single-threaded kernels. The function
  computed is the same.

  Args:
    model: a ConvNet.
    images: float [batch, side, side, 3] from cifar10_input; batch a multiple
      of slices.
    compute_dtype: tf.float32, or tf.bfloat16 / tf.float16 for mixed
      precision (variables stay float32 and are cast for the computation).
    slices: the number of slices.

  Returns:
    logits: float32 [batch, classes];
    activations: ordered dict layer name -> activations after its ReLU.
  """
  if slices == 1:
    return _forward(model, images, compute_dtype, tf.name_scope)
  scope = summaries.SharedScopes()  # one box per layer in the graph
  with scope('slices'):
    parts = tf.split(images, slices)
  outputs = [_forward(model, part, compute_dtype, scope) for part in parts]
  with scope('slices'):
    logits = tf.concat([o[0] for o in outputs], 0)
    acts = collections.OrderedDict(
        (k, tf.concat([o[1][k] for o in outputs], 0)) for k in outputs[0][1])
  return logits, acts


def _forward(model, images, compute_dtype, scope):
  """inference() of one slice; scope opens each layer's name scope."""
  with scope('params'):  # the weights in the compute dtype
    p = {k: tf.cast(v, compute_dtype) for k, v in model.params.items()}
  acts = collections.OrderedDict()
  # A convolution's bias and ReLU wait (b) for the next pool or norm:
  # pool(relu(y + b)) == relu(pool(y) + b), since max-pooling commutes with
  # a per-channel bias and with the ReLU (both non-decreasing), values and
  # gradients alike, so pooling first adds and clips 4x fewer values; norm
  # adds and clips inside its own loop (lrn, in float32 whatever the dtype).
  x, b = tf.cast(images, compute_dtype), None
  for name in NETWORK:
    with scope(name):
      if name.startswith('pool'):
        x = tf.nn.max_pool2d(x, 3, 2, 'SAME')
        continue
      if name.startswith('norm'):
        x, b = lrn.local_response_normalization(x, b), None
        continue
      if b is not None:
        x, b = tf.nn.relu(x + b), None
      w, bias = p[name + '/weights'], p[name + '/biases']
      if w.shape.rank > 2:
        x, b = convolve(x, w), bias
        acts[name] = tf.nn.relu(x + b)  # for the summaries only
        continue
      if x.shape.rank == 4:  # the maps as one vector per image
        x = tf.reshape(x, [tf.shape(x)[0], w.shape[0]])
      x = tf.matmul(x, w) + bias
      acts[name] = x = x if name == NETWORK[-1] else tf.nn.relu(x)
  return tf.cast(x, tf.float32), acts


def convolve(x, w):
  """A convolution (stride 1, SAME) of x by w, or with w of rank 3 a
  locally connected layer as cuda-convnet's: [side * side, 3 * 3 *
  channels, filters], each position of the maps its own 3x3 filters."""
  if w.shape.rank == 4:
    return tf.nn.conv2d(x, w, 1, 'SAME')
  patches = tf.image.extract_patches(x, [1, 3, 3, 1], [1] * 4, [1] * 4, 'SAME')
  y = tf.einsum('bpk,pkf->bpf', tf.reshape(patches, [-1, *w.shape[:2]]), w)
  return tf.reshape(y, [-1, x.shape[1], x.shape[2], w.shape[2]])


def reference_inference(model, images):
  """The tutorial's forward pass, written plainly with TensorFlow's own ops
  (ReLU before pooling, tf.nn.local_response_normalization): the
  definition that inference() computes faster (tests compare logits and
  gradients). Float32 only; not used to train. Returns float32 logits.
  """
  x = images
  for name in NETWORK:
    if name.startswith(('pool', 'norm')):
      x = (tf.nn.max_pool2d(x, 3, 2, 'SAME') if name.startswith('pool') else
           tf.nn.local_response_normalization(x, **lrn.LRN))
      continue
    w, b = model.params[name + '/weights'], model.params[name + '/biases']
    x = (convolve(x, w) if w.shape.rank > 2 else
         tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w)) + b
    x = x if name == NETWORK[-1] else tf.nn.relu(x)
  return x


def loss(model, logits, labels):
  """Cross-entropy plus weight decay, each term kept for the summaries.

  Args:
    model: a ConvNet.
    logits: float32 [batch, classes] from inference().
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
    for layer, (_, _, wd, _) in model.layers.items():
      if wd:
        losses[layer + '/weight_loss'] = wd * tf.nn.l2_loss(
            model.params[layer + '/weights'])
  losses['total_loss'] = tf.add_n(list(losses.values()), name='total_loss')
  return losses


def learning_rate(global_step, global_batch_size, schedule=SCHEDULE):
  """The tutorial's schedule: 0.1, times 0.1 every 350 epochs (staircase).

  Args: global_step; global_batch_size, examples per step; schedule, a
    Schedule (epochs of train_size examples). Returns: float32 scalar.
  """
  batches_per_epoch = schedule.train_size / global_batch_size
  decay_steps = max(int(batches_per_epoch * schedule.epochs_per_decay), 1)
  decays = tf.math.floordiv(tf.cast(global_step, tf.int64), decay_steps)
  return schedule.learning_rate * tf.pow(schedule.decay_factor,
                                         tf.cast(decays, tf.float32))


def moving_average_decay(global_step, schedule=SCHEDULE):
  """min(0.9999, (1 + step) / (10 + step)): the tutorial's num_updates decay
  (0.9999: schedule.moving_average_decay)."""
  step = tf.cast(global_step, tf.float32)
  return tf.minimum(schedule.moving_average_decay,
                    (1.0 + step) / (10.0 + step))


def training(model, state, images, labels, global_batch_size,
             with_summaries=False, slices=1, forward=None):
  """One step of the tutorial's train(), in replica context.

  Each replica's loss is divided by the replicas and the gradients summed
  across them (the update of one device on the combined batch), applied
  once by gradient descent; then the global step, the variables' moving
  averages (decay moving_average_decay of the new step) and the losses'
  (0.9, zero-debiased). In float16 the loss is scaled dynamically
  (cifar10_toolkit.grad_ops).

  Args:
    model: a ConvNet.
    state: its TrainState.
    images, labels: this replica's batch.
    global_batch_size: examples per step over all replicas (the schedule).
    with_summaries: also return what the summaries show: activations,
      gradients, images.
    slices: compute the batch in this many slices (inference()).
    forward: the forward pass, inference() unless another model's.

  Returns:
    dict: the loss terms (averaged over replicas), 'learning_rate', and with
    with_summaries 'activations', 'gradients' (this replica's) and 'images'.
  """
  ctx = tf.distribute.get_replica_context()
  out = gradients(model, state, images, labels, ctx.num_replicas_in_sync,
                  with_summaries, slices, forward)
  return update(model, state, out, global_batch_size,
                grad_ops.all_reduce(out))


def gradients(model, state, images, labels, replicas, with_summaries=False,
              slices=1, forward=None):
  """The first half of training(): this replica's losses and gradients.

  Returns:
    dict: 'losses' (name -> this replica's loss terms), 'gradients' (list,
    of the loss divided by replicas, times the loss scale with float16),
    with with_summaries 'activations' and 'images'.
  """
  variables = list(model.params.values())
  with tf.GradientTape() as tape:
    logits, acts = (forward or inference)(model, images, state.compute_dtype,
                                          slices)
    with tf.name_scope('loss'):
      losses = loss(model, logits, labels)
      scaled = losses['total_loss'] / replicas
      if state.loss_scaling:
        scaled *= state.loss_scale
  with tf.name_scope('gradients'):
    out = {'losses': losses, 'gradients': tape.gradient(scaled, variables)}
  if with_summaries:
    out.update(activations=acts, images=images)
  return out


def update(model, state, out, global_batch_size, reduced):
  """The second half of training(): loss scaling, the SGD update, the
  moving averages.

  Args: gradients()'s result, all_reduce() of it. Returns: training()'s.
  """
  grads, losses = reduced
  if state.loss_scaling:  # (float32 and bfloat16: no scale, no check)
    with tf.name_scope('loss_scaling'):
      grads = grad_ops.unscale(grads, state.loss_scale, state.good_steps)
  with tf.name_scope('sgd'):
    lr = learning_rate(state.global_step, global_batch_size, state.schedule)
    for v, g in zip(model.params.values(), grads):
      v.assign_sub(lr * g)
    step = state.global_step.assign_add(1)
  with tf.name_scope('moving_averages'):
    decay = moving_average_decay(step, state.schedule)
    for name, v in model.params.items():
      avg = state.averages[name]
      avg.assign_sub((1.0 - decay) * (avg - v))
  return grad_ops.step_result(model.params, out, grads, losses, lr,
                              state.loss_averages, LOSS_AVERAGE_DECAY)


def loss_averages(state):
  """The zero-debiased moving averages of the loss terms, name -> value."""
  bias = 1.0 - LOSS_AVERAGE_DECAY ** tf.cast(state.global_step, tf.float32)
  return {k: v / tf.maximum(bias, 1e-8) for k, v in state.loss_averages.items()}


def evaluation(logits, labels):
  """Number of examples whose label is the top-1 prediction.

  Args: logits float [batch, classes]; labels int [batch].
  Returns: int32 scalar count of correct predictions.
  """
  hits = tf.nn.in_top_k(tf.cast(labels, tf.int32), logits, 1)
  return tf.reduce_sum(tf.cast(hits, tf.int32))


def use_moving_averages(model, state):
  """Loads the variables' moving averages into the model (for evaluation)."""
  for name, v in model.params.items():
    v.assign(state.averages[name])
