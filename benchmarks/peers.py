"""The peers the toolkit is timed against, written as a skilled user would.

  KERAS                           name -> (mixed-precision policy,
                                  steps_per_execution)
  keras_convnet(steps_per_execution)   the tutorial's network in tf.keras
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
