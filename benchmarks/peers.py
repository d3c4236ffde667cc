"""The peers the toolkit is timed against, written as a skilled user would.

  KERAS                           name -> (mixed-precision policy,
                                  steps_per_execution)
  keras_convnet(steps_per_execution)   the tutorial's network in tf.keras
  keras_resnet20(jit_compile)     ResNet-20 (resnet20.py) in tf.keras
"""

import tensorflow as tf


def keras_convnet(steps_per_execution=1):
  """The tutorial's network as a skilled user would write it in Keras (under
  whatever mixed-precision policy is set)."""
  k = tf.keras

  def lrn(x):  # TensorFlow has no bfloat16 LRN kernel on CPUs: float32
    y = tf.nn.local_response_normalization(
        tf.cast(x, tf.float32), depth_radius=4, bias=1.0, alpha=0.001 / 9.0,
        beta=0.75)
    return tf.cast(y, x.dtype)
  init = lambda sd: k.initializers.TruncatedNormal(stddev=sd)
  model = k.Sequential([
      k.Input((24, 24, 3)),
      k.layers.Conv2D(64, 5, padding='same', activation='relu',
                      kernel_initializer=init(5e-2)),
      k.layers.MaxPooling2D(3, 2, padding='same'),
      k.layers.Lambda(lrn),
      k.layers.Conv2D(64, 5, padding='same', activation='relu',
                      kernel_initializer=init(5e-2),
                      bias_initializer=k.initializers.Constant(0.1)),
      k.layers.Lambda(lrn),
      k.layers.MaxPooling2D(3, 2, padding='same'),
      k.layers.Flatten(),
      k.layers.Dense(384, activation='relu', kernel_initializer=init(0.04),
                     bias_initializer=k.initializers.Constant(0.1),
                     kernel_regularizer=k.regularizers.l2(0.002)),
      k.layers.Dense(192, activation='relu', kernel_initializer=init(0.04),
                     bias_initializer=k.initializers.Constant(0.1),
                     kernel_regularizer=k.regularizers.l2(0.002)),
      k.layers.Dense(10, kernel_initializer=init(1 / 192.0),
                     dtype='float32'),  # logits in float32 for the loss
  ])
  model.compile(optimizer=k.optimizers.SGD(0.1),
                loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'], steps_per_execution=steps_per_execution)
  return model


KERAS = {'keras': ('float32', 1), 'keras_bf16': ('mixed_bfloat16', 1),
         'keras_bf16_spe20': ('mixed_bfloat16', 20)}


def keras_resnet20(jit_compile=False):
  """ResNet-20 as a skilled user would write it in Keras: the paper's
  network as resnet20.py has it (3x3 convolutions without biases, batch
  normalization with momentum 0.9 and epsilon 1e-5, option-A shortcuts),
  SGD with momentum 0.9 at 0.1, weight decay 1e-4 (an L2 penalty of half
  that on the kernels: the same gradient), under whatever mixed-precision
  policy is set; XLA when jit_compile."""
  k = tf.keras
  l2 = k.regularizers.l2(5e-5)

  def conv_bn(x, filters, stride=1, relu=True):
    x = k.layers.Conv2D(filters, 3, stride, padding='same', use_bias=False,
                        kernel_initializer='he_normal',
                        kernel_regularizer=l2)(x)
    x = k.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return k.layers.ReLU()(x) if relu else x

  def shortcut(x, filters):  # option A: subsample, zero channels
    pad = (filters - x.shape[-1]) // 2
    return k.layers.Lambda(lambda t: tf.pad(
        t[:, ::2, ::2, :], [[0, 0], [0, 0], [0, 0], [pad, pad]]))(x)

  inputs = k.Input((32, 32, 3))
  x = conv_bn(inputs, 16)
  for s, filters in enumerate((16, 32, 64)):
    for b in range(3):
      stride = 2 if s > 0 and b == 0 else 1
      y = conv_bn(conv_bn(x, filters, stride), filters, relu=False)
      x = k.layers.ReLU()(k.layers.Add()([
          y, shortcut(x, filters) if stride > 1 else x]))
  x = k.layers.GlobalAveragePooling2D()(x)
  outputs = k.layers.Dense(10, kernel_regularizer=l2, dtype='float32')(x)
  model = k.Model(inputs, outputs)
  model.compile(optimizer=k.optimizers.SGD(0.1, momentum=0.9),
                loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'], jit_compile=jit_compile)
  return model
