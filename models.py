"""The model modules that ship, and a user's own: --model NAME picks one.

  get(name)      the model module called name: one that ships, a Python
                 file (my_model.py) or a module (my_model, pkg.my_model)
                 of the user's; checked against the model interface
                 (cifar10_toolkit.interface); anything else is
                 errors.UsageError in one line
  known(name)    whether get(name) has a module to load (without
                 importing it: the flag's check before TensorFlow loads)
  NAMES          the names that ship, the default (the tutorial's convnet)
                 first
  before_tensorflow(name)
                 what model `name` asks of TensorFlow before it loads
                 (oneDNN for the models in ONEDNN)

A model module declares the tutorial's four functions (inference, loss,
training, evaluation) and the few names the scripts build a run from
(docs/extending.md). Its checkpoints record its name: a checkpoint of one
model given to another is refused in one line naming both.
"""

import os
import platform

from cifar10_toolkit import plugins

NAMES = ('convnet', 'resnet20')
# Models that ship and that TensorFlow runs faster with oneDNN, on the x86
# processors where it leaves oneDNN off (AVX2 without AVX-512: AMD Zen 1
# to 3, older Intel); where it turns oneDNN on itself, this changes
# nothing. Not the tutorial's convnet: its defaults train bit for bit as
# they always did. Figures in docs/performance.md.
ONEDNN = ('resnet20',)
CHOICES = ('choose one of %s, or a Python file or module of the model '
           'interface (docs/extending.md)' % ', '.join(NAMES))


def known(name):
  """True when get(name) finds a module (it may still lack a name)."""
  return name in NAMES or plugins.findable(name)


def before_tensorflow(name):
  """Sets what model `name` asks of TensorFlow before TensorFlow loads:
  TF_ENABLE_ONEDNN_OPTS=1 for a model in ONEDNN on x86, unless the variable
  is set already (TF_ENABLE_ONEDNN_OPTS=0 keeps oneDNN off). A script calls
  it once its flags parse, before it imports TensorFlow."""
  if name in ONEDNN and platform.machine() in ('x86_64', 'AMD64'):
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


def get(name):
  """The model module --model `name` picks.

  Raises:
    errors.UsageError: no such module (the line lists the choices), it
      fails as it loads, or it lacks part of the interface (the line names
      the module and what it lacks).
  """
  from cifar10_toolkit import interface  # (TensorFlow: not before the flags)
  return interface.check(plugins.load(name, CHOICES))
