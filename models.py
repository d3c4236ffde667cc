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

A model module declares the tutorial's four functions (inference, loss,
training, evaluation) and the few names the scripts build a run from
(docs/extending.md). Its checkpoints record its name: a checkpoint of one
model given to another is refused in one line naming both.
"""

from cifar10_toolkit import plugins

NAMES = ('convnet', 'resnet20')
CHOICES = ('choose one of %s, or a Python file or module of the model '
           'interface (docs/extending.md)' % ', '.join(NAMES))


def known(name):
  """True when get(name) finds a module (it may still lack a name)."""
  return name in NAMES or plugins.findable(name)


def get(name):
  """The model module --model `name` picks.

  Raises:
    errors.UsageError: no such module (the line lists the choices), it
      fails as it loads, or it lacks part of the interface (the line names
      the module and what it lacks).
  """
  from cifar10_toolkit import interface  # (TensorFlow: not before the flags)
  return interface.check(plugins.load(name, CHOICES))
