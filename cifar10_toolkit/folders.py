"""The folders a run makes, and leaving none of them empty when it fails.

  made = new_folders(path)    the folders that making path would create
  remove_if_empty(made)       those of them still empty, removed
"""

import os


def new_folders(path):
  """The folders that making `path` would create, outermost first."""
  made, p = [], os.path.abspath(path)
  while not os.path.lexists(p):
    made.append(p)
    p = os.path.dirname(p)
  return made[::-1]


def remove_if_empty(folders):
  """Removes the folders of new_folders(...) that are still empty, innermost
  first, so that a run that failed leaves no empty folder behind (os.rmdir:
  never one that holds anything)."""
  for folder in reversed(folders):
    try:
      os.rmdir(folder)
    except OSError:
      pass
