"""Data sets made into records on first use: a folder of images, MATLAB files.

  image_folder(path, image_size)   the DataSet of DIR/train/<class>/* (and
                                   DIR/test/<class>/*, else a seeded split)
  mat_files(files)                 the prepare of a data set published as
                                   MATLAB arrays X [H, W, C, N], y [N, 1]
                                   (SVHN's cropped digits)

Either is converted once into the CIFAR binary layout (a label byte, then the
image's planes) in data_dir, the whole folder written beside and renamed into
place when complete; from then on every script reads it as it reads
CIFAR-10's files (the input, the device feed, evaluation, export). The
images are read by images.read: cut to the centre square, scaled to
image_size (antialiased).
"""

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from cifar10_toolkit import dataset
from cifar10_toolkit import download
from cifar10_toolkit import errors
from cifar10_toolkit import folders

TEST_FRACTION = 0.1  # of each class's images, when the folder has no test/
SPLIT_SEED = 0
MANIFEST = 'manifest.json'


def _scan(root):
  """(class names, {'train': [(label, relative path)], 'test': [...]},
  ignored count, whether test/ was carved from train/) of an image folder.

  Raises:
    errors.UsageError: the folder's shape is wrong (the line names it).
  """
  train = os.path.join(root, 'train')
  if not os.path.isdir(train):
    raise errors.UsageError('%s: no train/ folder (expected %s/train/<class>/'
                            '<images>)' % (root, root))

  def classes_in(split):
    return sorted(e.name for e in os.scandir(split) if e.is_dir()
                  and not e.name.startswith('.'))
  names = classes_in(train)
  if len(names) < 2:
    raise errors.UsageError('%s: %s; a classifier needs two classes or more' % (
        train, 'one class folder only (%s)' % names[0] if names else
        'no class folders'))
  if len(names) > 256:
    raise errors.UsageError('%s: %d class folders, more than the 256 a label '
                            'byte holds' % (train, len(names)))
  test = os.path.join(root, 'test')
  carved = not os.path.isdir(test)
  if not carved and classes_in(test) != names:
    raise errors.UsageError('%s and %s hold different class folders (%s)' % (
        train, test, ', '.join(sorted(set(classes_in(test)) ^ set(names)))))
  files, ignored = {'train': [], 'test': []}, 0
  for split in ('train',) if carved else ('train', 'test'):
    for label, name in enumerate(names):
      folder = os.path.join(root, split, name)
      paths, passed_over = folders.image_files(folder)
      found = [os.path.relpath(p, root) for p in paths]
      ignored += passed_over
      if not found:
        raise errors.UsageError('%s: an empty class (no JPEG, PNG, BMP or GIF '
                                'file)' % folder)
      files[split] += [(label, f) for f in found]
  if carved:
    files = _split(files['train'], len(names))
  return names, files, ignored, carved


def _split(train, num_classes):
  """A seeded split of each class: TEST_FRACTION of its images (at least
  one of a class of two or more) to test."""
  rng = np.random.default_rng(SPLIT_SEED)
  out = {'train': [], 'test': []}
  for label in range(num_classes):
    mine = [e for e in train if e[0] == label]
    n = max(1, round(len(mine) * TEST_FRACTION)) if len(mine) > 1 else 0
    chosen = set(rng.permutation(len(mine))[:n].tolist())
    for i, e in enumerate(mine):
      out['test' if i in chosen else 'train'].append(e)
  return out


def image_folder(path, image_size=32):
  """The DataSet of a folder of images: path/train/<class>/<images> and
  path/test/<class>/<images> (without test/, a seeded TEST_FRACTION of each
  class is held out); the class names are the folders', sorted. Files are
  JPEG, PNG, BMP or GIF by their names (others are ignored, with a count);
  the images are made image_size x image_size x 3 (centre square, scaled).

  Raises:
    errors.UsageError: no train/, fewer than two classes, test/ with other
      classes, or an empty class.
  """
  root = os.path.abspath(path)
  names, files, _, carved = _scan(root)
  key = hashlib.md5(root.encode('utf-8', 'surrogateescape')).hexdigest()[:8]
  return dataset.DataSet(
      name=root, title='the images in %s' % root,
      image_shape=(image_size, image_size, 3), class_names=tuple(names),
      train_size=len(files['train']), test_size=len(files['test']),
      folder='images-%s-%dpx-%s' % (os.path.basename(root), image_size, key),
      train_files=('train.bin',), test_files=('test.bin',), label_bytes=1,
      label_byte=0, prepare=functools.partial(_prepare_folder, root, carved))


def _manifest(root, files, data_set, carved):
  """What the records are made of: every file's size and time, the split."""
  def entry(label, rel):
    info = os.lstat(os.path.join(root, rel))
    return [label, rel, info.st_size, info.st_mtime_ns]
  return {'image_shape': list(data_set.image_shape), 'carved': carved,
          'split_seed': SPLIT_SEED if carved else None,
          'test_fraction': TEST_FRACTION if carved else None,
          'classes': list(data_set.class_names),
          'train': [entry(*e) for e in files['train']],
          'test': [entry(*e) for e in files['test']]}


def _changes(old, new):
  """'N added, M removed, K changed' between two manifests."""
  def files(m):
    return {e[1]: tuple(e) for split in ('train', 'test') for e in m[split]}
  a, b = files(old), files(new)
  changed = sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
  return '%d added, %d removed, %d changed' % (
      len(b.keys() - a.keys()), len(a.keys() - b.keys()), changed)


def _prepare_folder(root, carved, data_dir, source, data_set):
  """The image folder's records in data_dir/<folder>, made or remade when
  the folder changed (a line says so); the folder's path."""
  del source  # the images are the source
  from cifar10_toolkit import images  # (TensorFlow: loaded to read them)
  names, files, ignored, _ = _scan(root)
  manifest = _manifest(root, files, data_set, carved)
  out = os.path.join(data_dir, data_set.folder)
  stored = None
  try:
    with open(os.path.join(out, MANIFEST)) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    pass
  if stored == manifest:
    dataset.check_batches_bin(out, data_set)
    return out
  if (names, len(files['train']), len(files['test'])) != (
      list(data_set.class_names), data_set.train_size, data_set.test_size):
    raise errors.DataSetError('%s changed while the run started; run again' %
                              root)
  count = len(files['train']) + len(files['test'])
  print('%s %s: %d images (%d ignored: not JPEG, PNG, BMP or GIF by name) '
        'into %dx%d records in %s ...' % (
            'The images changed since their records were made (%s); '
            'remaking' % _changes(stored, manifest) if stored else 'Making',
            root, count, ignored, data_set.image_shape[0],
            data_set.image_shape[1], out), flush=True)
  real = os.path.realpath(root)

  def records(entries):  # uint8 [N, record bytes], filled row by row
    out = np.empty((len(entries), data_set.record_bytes), np.uint8)
    for row, (label, rel) in zip(out, entries):
      path = os.path.join(root, rel)
      if os.path.commonpath([real, os.path.realpath(path)]) != real:
        raise images.ImageError('%s: a symbolic link out of %s; copy the '
                                'image in instead' % (path, root))
      image = images.read(path, data_set.image_shape, title=data_set.title)
      row[0], row[1:] = label, image.transpose(2, 0, 1).ravel()
    return out
  began = time.monotonic()
  _write_folder(data_dir, out, {
      name: records(files[split])
      for name, split in (('train.bin', 'train'), ('test.bin', 'test'))},
                {MANIFEST: json.dumps(manifest)})
  print('Made %s in %.0f s' % (out, time.monotonic() - began), flush=True)
  return out


def _write_folder(data_dir, out, arrays, texts):
  """Writes out (arrays and texts, by file name) whole: into a folder beside
  it, renamed into place (an older out removed after)."""
  os.makedirs(data_dir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.convert-', dir=data_dir)
  old = None
  try:
    for name, array in arrays.items():
      array.tofile(os.path.join(tmp, name))
    for name, text in texts.items():
      with open(os.path.join(tmp, name), 'w') as f:
        f.write(text)
    if os.path.lexists(out):
      old = tempfile.mkdtemp(prefix='.old-', dir=data_dir)
      os.replace(out, os.path.join(old, 'records'))
    os.replace(tmp, out)
  except OSError as e:
    raise errors.DataSetError('%s: cannot be written (%s)' % (out, e.strerror))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    if old:
      shutil.rmtree(old, ignore_errors=True)


def mat_files(files):
  """The prepare of a data set published as MATLAB files (SVHN's).

  Args:
    files: (record file, MATLAB file, md5) for each of the data set's
      record files: the MATLAB file holds X, uint8 [height, width,
      channels, N], and y [N, 1], labels 1 to the number of classes, the
      last meaning 0 (SVHN's digit 0 is label 10).

  Returns:
    prepare(data_dir, source, data_set): the MATLAB files are taken from
    data_dir, else from source (a local folder, or a base URL; the flag,
    else $<data_set.source_env>), else downloaded from data_set.url, the
    official files' base URL (their md5 checked); converted into
    data_dir/<folder>; kept where they are.
  """
  return functools.partial(_prepare_mat, files)


def _prepare_mat(files, data_dir, source, data_set):
  out = os.path.join(data_dir, data_set.folder)
  if os.path.isdir(out):
    dataset.check_batches_bin(out, data_set)
    return out
  source = dataset.resolve_source(data_set, source)
  arrays = {}
  for record_file, mat, md5 in files:
    path = os.path.join(data_dir, mat)
    if not os.path.isfile(path) and '://' not in source:
      path = os.path.join(os.path.expanduser(source), mat)
      if not os.path.isfile(path):
        raise errors.DataSetError(
            'no %s in %s or %s; put the official %s there, or point '
            '--data_source or $%s at a folder holding it or a mirror URL' % (
                mat, data_dir, source, mat, data_set.source_env))
    elif not os.path.isfile(path):
      os.makedirs(data_dir, exist_ok=True)
      try:
        download.fetch(source.rstrip('/') + '/' + mat, path)
      except download.Failed as e:
        raise errors.DataSetError('no %s in %s and fetching it failed (%s)' %
                                  (mat, data_dir, e))
      if source == data_set.url and dataset.file_md5(path) != md5:
        os.remove(path)
        raise errors.DataSetError('%s: md5 differs from the official %s '
                                  '(corrupt download; removed)' % (path, md5))
    arrays[record_file] = _mat_records(path, data_set)
  print('Converting %s into %s ...' % (', '.join(m for _, m, _ in files), out),
        flush=True)
  _write_folder(data_dir, out, arrays, {})
  dataset.check_batches_bin(out, data_set)
  return out


def _mat_records(path, data_set):
  """uint8 [N, record bytes] from a MATLAB file's X and y (see mat_files)."""
  import scipy.io  # (only SVHN needs it: loaded here)
  try:
    mat = scipy.io.loadmat(path, variable_names=('X', 'y'))
    x, y = mat['X'], np.asarray(mat['y']).reshape(-1)
  except Exception as e:  # (scipy's reader raises many kinds on junk)
    raise errors.DataSetError('%s: not a MATLAB file with X and y (%s)' % (
        path, str(e).splitlines()[0] if str(e) else type(e).__name__))
  shape = tuple(data_set.image_shape)
  if x.dtype != np.uint8 or x.shape[:3] != shape or x.shape[3] != y.size:
    raise errors.DataSetError(
        '%s: X is %s %s, y has %d labels; expected uint8 %s x N and N '
        'labels' % (path, x.dtype, 'x'.join(map(str, x.shape)), y.size,
                    'x'.join(map(str, shape))))
  n = data_set.num_classes
  if y.size and (y.min() < 1 or y.max() > n or (y != np.round(y)).any()):
    raise errors.DataSetError('%s: labels outside 1-%d' % (path, n))
  labels = (y.astype(np.int64) % n).astype(np.uint8)  # n means 0
  planes = x.transpose(3, 2, 0, 1).reshape(y.size, -1)
  return np.concatenate([labels[:, None], planes], axis=1)
