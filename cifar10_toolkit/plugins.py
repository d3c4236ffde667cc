"""A user's own Python file or module, named by a flag (--dataset, --model).

  findable(name)               whether name is a .py file that exists or
                               a module that can be imported, without
                               importing it (a flag's check before
                               TensorFlow loads)
  load(name, choices)          the module: a path ending in .py, or a
                               module name (dotted or not); a name that
                               is neither, or a file that fails as it is
                               run, is errors.UsageError in one line
  name_of(module)              the name a run records for it: the file's
                               name without .py, or the module's name
"""

import importlib
import importlib.util
import os

from cifar10_toolkit import errors


def findable(name):
  """True when load(name) has a file or module to load (not importing it)."""
  if name.endswith('.py'):
    return os.path.isfile(name)
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):  # a parent package missing, or ''
    return False


def load(name, choices):
  """The module a flag (--dataset, --model) names.

  Args:
    name: 'path/to/file.py' or 'module' or 'package.module'.
    choices: what the flag takes, said when name is none of these.

  Returns:
    the module (a file is loaded under its name without .py).

  Raises:
    errors.UsageError: no such file or module (the line lists the choices),
      or the file raised as it ran (the line names it and the error).
  """
  try:
    if name.endswith('.py'):
      if not os.path.isfile(name):
        raise errors.UsageError('%s: no such file; %s' % (name, choices))
      stem = os.path.basename(name)[:-3]
      spec = importlib.util.spec_from_file_location(stem, name)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module
    if not findable(name):
      raise errors.UsageError('%r: unknown; %s' % (name, choices))
    return importlib.import_module(name)
  except errors.UsageError:
    raise
  except Exception as e:  # the user's file failed: say where
    raise errors.UsageError('%s: %s: %s' % (name, type(e).__name__, e))


def name_of(module):
  """The name a checkpoint records for a model module."""
  return module.__name__
