"""Paths checked before any work: TensorFlow takes only paths it can
encode as UTF-8, and a folder must leave room for the names written in it.

  problem(path, room)         why TensorFlow cannot use path, or None
  check_flags(flag_values)    the first path flag with a problem, worded

Python keeps the bytes of a name that is not UTF-8 (a folder made under
another locale, or LC_ALL=C) as surrogates; TensorFlow's file functions
then fail deep inside with a traceback. A folder whose path is near
PATH_MAX starts a run but fails at its first save, when TensorFlow's
temporary names (ckpt-N_temp/part-...tempstate...) make it too long.
"""

import os

# Bytes of names a run writes under one of its folders, at most: a
# worker's checkpoint temporaries (.worker-worker-N/ckpt-N_temp/part-00000-
# of-00001.data-00000-of-00001.tempstate...) or an event file with a
# 64-byte host name come to about 130.
ROOM_BENEATH = 256
FOLDER_FLAGS = ('data_dir', 'train_dir', 'eval_dir', 'checkpoint_dir',
                'export_dir')
FILE_FLAGS = ('output', 'tflite', 'data_source', 'checkpoint')


def shown(path):
  """path as text a console can print: bytes that are not UTF-8 as \\xNN,
  a long one cut in the middle."""
  text = repr(os.fsencode(path))[2:-1]
  return text if len(text) <= 100 else text[:48] + '...' + text[-48:]


def problem(path, room=None):
  """Why TensorFlow cannot use path, or None: it is not UTF-8, or (room not
  None) it is too long with room bytes of names beneath it."""
  try:
    path.encode('utf-8')
  except UnicodeEncodeError:
    return ('%s: not UTF-8, which TensorFlow cannot open; rename it'
            % shown(path))
  if room is None:
    return None
  full = os.fsencode(os.path.abspath(path))
  longest = max([len(c) for c in full.split(b'/')] + [0])
  name_max, path_max = 255, 4096
  try:
    name_max = os.pathconf('/', 'PC_NAME_MAX')
    path_max = os.pathconf('/', 'PC_PATH_MAX')
  except (OSError, ValueError):
    pass
  if longest > name_max:
    return '%s: a name in it is %d bytes long, over the %d allowed' % (
        shown(path), longest, name_max)
  if len(full) + room >= path_max:
    return ('%s: too long (%d bytes): with the %d bytes of the names written '
            'in it, over the system\'s %d' % (shown(path), len(full), room,
                                              path_max))
  return None


def check_flags(flag_values):
  """'--flag value: what is wrong' for the first path flag (or any string
  flag that is not UTF-8) TensorFlow cannot use; None when all can be."""
  for name in sorted(flag_values):
    value = flag_values[name].value
    if not isinstance(value, str) or (name == 'data_source' and
                                      '://' in value):
      continue
    why = problem(value, ROOM_BENEATH if name in FOLDER_FLAGS else
                  0 if name in FILE_FLAGS else None)
    if why:
      return '--%s %s' % (name, why)
  return None

