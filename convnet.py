"""The TensorFlow CIFAR-10 tutorial's convolutional network, in TensorFlow 2.

The model, in the order a training program chains it (the training step is
convnet_training.training):

  model = ConvNet(seed)                   the variables, created once
  logits, activations = inference(model, images)
  losses = loss(model, logits, labels)    cross-entropy + weight decay
  correct = evaluation(logits, labels)    top-1 correct count
  use_moving_averages(model, state)       load the averaged weights to evaluate
  Classifier(model).serve(uint8 images)   probabilities and class names (the
      serving function of an exported model; cifar10_export.py)

reference_inference(model, images) is the tutorial's forward pass written
plainly; inference() computes the same function faster (lrn.py, slices).

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
