"""The folders a run makes, and leaving none of them empty when it fails;
the image files a folder holds.

  made = new_folders(path)    the folders that making path would create
  remove_if_empty(made)       those of them still empty, removed
  image_files(folder)         its image files, recursively, in order
  write_whole(path, text)     a file written whole or not at all
"""

import os
import tempfile

# An image decoded takes width x height x 4 bytes or more while it is
# scaled: one whose header declares more is refused unread (images.read).
MAX_MEGAPIXELS = 64  # 8,192 x 8,192
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')  # any case


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


def image_files(folder):
  """The image files (IMAGE_EXTENSIONS) under folder, recursively, in sorted
  order, hidden files and folders left out; and how many other files there
  are.

  Returns:
    (list of paths, each folder joined with its path inside, number of
    files passed over).
  """
  found, ignored = [], 0
  for top, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(names):
      if name.startswith('.'):
        continue
      if name.lower().endswith(IMAGE_EXTENSIONS):
        found.append(os.path.join(top, name))
      else:
        ignored += 1
  return found, ignored


def write_whole(path, text, prefix=None):
  """Writes text to path whole or not at all, and durably.

  Into a new temporary file beside it (prefix, default '.<name>.tmp-': no
  planted link is followed), synced, then renamed over path (a link at path
  is replaced, not followed); its mode is what the umask gives a new file.
  A crash leaves the old file, or the new one, never a part. Text is
  written as UTF-8; a file name in it that is not UTF-8 keeps its own bytes.
  """
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix or '.%s.tmp-' %
                             os.path.basename(path))
  try:
    with os.fdopen(fd, 'w', encoding='utf-8',
                   errors='surrogateescape') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    umask = os.umask(0o22)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.lexists(tmp):
      os.remove(tmp)
    raise
  fd = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(fd)  # the rename itself survives a power cut
  finally:
    os.close(fd)
