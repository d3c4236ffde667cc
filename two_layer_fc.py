"""The blog tutorial's two-layer fully connected network, in TensorFlow 2.

Functions and classes, in the order run_fc_model.py chains them:

  model = TwoLayerFC(hidden_units)        the variables, created once
  state = TrainState()                    the global step
  logits = inference(model, images)       3072 -> hidden (ReLU) -> 10
  total = loss(model, logits, labels, reg_constant)
      cross-entropy plus reg_constant x sum(w^2)/2 for both weight matrices
  total = training(model, state, images, labels, learning_rate, reg_constant)
      one gradient-descent step that advances the global step
  accuracy = evaluation(logits, labels)

Architecture and initialisation: docs/model.md (weights truncated
normal with stddev 1/sqrt(fan_in), biases zero).
"""

import tensorflow as tf

IMAGE_PIXELS = 3072
NUM_CLASSES = 10


class TwoLayerFC(tf.Module):
  """Weights and biases of the two layers.

  Attributes:
    params: dict 'layer1/weights', 'layer1/biases', 'layer2/weights',
      'layer2/biases' -> tf.Variable.
  """

  def __init__(self, hidden_units, image_pixels=IMAGE_PIXELS,
               classes=NUM_CLASSES, seed=0, name='two_layer_fc'):
    """Creates the variables.

    Args:
      hidden_units: width of the hidden layer.
      image_pixels: inputs per image.
      classes: number of classes.
      seed: int fixing the initial weights.
      name: module name.
    """
    super().__init__(name=name)
    shapes = {'layer1': [image_pixels, hidden_units],
              'layer2': [hidden_units, classes]}
    self.params = {}
    for i, (layer, shape) in enumerate(shapes.items()):
      init = tf.random.stateless_truncated_normal(
          shape, [seed, i], stddev=1.0 / shape[0] ** 0.5)
      self.params[layer + '/weights'] = tf.Variable(init,
                                                    name=layer + '/weights')
      self.params[layer + '/biases'] = tf.Variable(tf.zeros([shape[1]]),
                                                   name=layer + '/biases')

  @property
  def hidden_units(self):
    return int(self.params['layer1/weights'].shape[1])


class TrainState(tf.Module):
  """What training changes besides the weights: the global step."""

  def __init__(self, name='train_state'):
    super().__init__(name=name)
    self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                   name='global_step')


def inference(model, images):
  """Forward pass.

  Args:
    model: a TwoLayerFC.
    images: float32 [batch, 3072], mean image subtracted.

  Returns:
    float32 logits [batch, 10].
  """
  p = model.params
  with tf.name_scope('hidden1'):
    hidden = tf.nn.relu(tf.matmul(images, p['layer1/weights']) +
                        p['layer1/biases'])
  with tf.name_scope('softmax_linear'):
    return tf.matmul(hidden, p['layer2/weights']) + p['layer2/biases']


def regularization(model, reg_constant):
  """reg_constant x sum(w^2)/2, summed over both weight matrices."""
  return reg_constant * tf.add_n([
      tf.nn.l2_loss(model.params[k])
      for k in ('layer1/weights', 'layer2/weights')
  ])


def loss(model, logits, labels, reg_constant):
  """Mean cross-entropy plus the L2 regularization.

  Args:
    model: a TwoLayerFC.
    logits: from inference().
    labels: int [batch].
    reg_constant: weight of the regularization.

  Returns:
    float32 scalar total loss.
  """
  with tf.name_scope('loss'):
    with tf.name_scope('cross_entropy'):
      cross_entropy = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(
              labels=tf.cast(labels, tf.int32), logits=logits))
    with tf.name_scope('regularization'):
      return cross_entropy + regularization(model, reg_constant)


def training(model, state, images, labels, learning_rate, reg_constant):
  """One step of plain gradient descent; advances the global step.

  Args:
    model: a TwoLayerFC.
    state: its TrainState.
    images, labels: a batch.
    learning_rate: step size.
    reg_constant: weight of the regularization.

  Returns:
    (total loss, logits) of the batch before the update.
  """
  with tf.GradientTape() as tape:
    logits = inference(model, images)
    total = loss(model, logits, labels, reg_constant)
  variables = list(model.params.values())
  with tf.name_scope('gradients'):
    grads = tape.gradient(total, variables)
  with tf.name_scope('sgd'):
    for v, g in zip(variables, grads):
      v.assign_sub(learning_rate * g)
    state.global_step.assign_add(1)
  return total, logits


def evaluation(logits, labels):
  """Fraction of examples whose top-1 prediction is the label (float32)."""
  correct = tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                     tf.cast(labels, tf.int32))
  return tf.reduce_mean(tf.cast(correct, tf.float32))
