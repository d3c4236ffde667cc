"""A data set of fixed-length binary records: what it is, getting it,
checking it.

  DataSet(...)    one data set, described in one place: image shape,
      classes, sizes, files and record layout, where to get it and its md5
      (data_sets.py at the root describes the ones that ship)
  maybe_download_and_extract(data_dir, source, data_set)
      -> data_dir/<data_set.folder>: fetch the archive, check it, extract it
      all or nothing (or the data set's own prepare: converted.py)
  check_batches_bin(folder, data_set), check_bin_file(path, data_set),
  check_record_counts(...)   the checks, for data already extracted.
  fingerprint(data_dir, data_set)   the md5 of the extracted files
  errors.DataSetError  every problem, one line naming the file and what
"""

import dataclasses
import errno
import hashlib
import os
import shutil
import tarfile
import tempfile
import time
import zlib

import numpy as np

from cifar10_toolkit import download
from cifar10_toolkit import folders
from cifar10_toolkit import errors

@dataclasses.dataclass(frozen=True)
class DataSet:
  """An image classification data set stored as fixed-length binary records.

  A record is `label_bytes` header bytes, one of which (`label_byte`) is the
  class, then the image: its channels as planes, each row by row (the
  CIFAR binary layout).

  Attributes:
    name: what --dataset calls it.
    title: its name for people ('CIFAR-10').
    image_shape: (height, width, channels) of the images in the files.
    class_names: the classes, in label order.
    train_size, test_size: examples in the official training and test files.
    folder: the folder the archive unpacks to, and the extracted data's.
    train_files, test_files: the record files in folder, in order.
    label_bytes, label_byte: header bytes of a record; which is the label.
    names_file: the archive's file of class names, one a line (checked
      against class_names on extraction), or None.
    archive, url, md5: the official archive's file name, URL and md5.
    source_env: environment variable naming another source of the archive
      (a local path or a mirror URL).
    prepare: for a data set not shipped as records, prepare(data_dir,
      source, data_set) makes (or checks) data_dir/folder's record files
      and returns the folder; None: the archive is fetched and extracted.
    source_files: official files prepare fetches into data_dir (kept).
    records_per_file: (file name, records) of files whose official counts
      are not the even split of train_size (or test_size) among them.
  """
  name: str
  title: str
  image_shape: tuple
  class_names: tuple
  train_size: int
  test_size: int
  folder: str
  train_files: tuple
  test_files: tuple
  label_bytes: int
  label_byte: int
  names_file: str = None
  archive: str = None
  url: str = None
  md5: str = None
  source_env: str = None
  prepare: object = None
  source_files: tuple = ()
  records_per_file: tuple = ()

  @property
  def num_classes(self):
    return len(self.class_names)

  @property
  def image_bytes(self):
    return int(np.prod(self.image_shape))

  @property
  def record_bytes(self):
    return self.label_bytes + self.image_bytes

  def file_records(self, name):
    """Records the official file `name` holds."""
    if name in dict(self.records_per_file):
      return dict(self.records_per_file)[name]
    if name in self.train_files:
      return self.train_size // len(self.train_files)
    return self.test_size // len(self.test_files)

  @property
  def all_files(self):
    return self.train_files + self.test_files

  @property
  def kept_names(self):
    """What data_dir holds of this data set (a fresh run keeps them)."""
    return (self.folder, self.archive) + tuple(self.source_files)


def _is_url(source):
  return '://' in source


def file_md5(path):
  digest = hashlib.md5()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _download(url, dest, data_set):
  """Downloads url to dest (download.fetch: bounded in time and size,
  through a .partial file removed whatever stops it)."""
  try:
    download.fetch(url, dest)
  except download.Failed as e:
    raise errors.DataSetError(
        'no %s data set in %s and fetching %s failed (%s); put %s in '
        '%s, or point --data_source or $%s at a local archive path or a '
        'mirror URL' % (data_set.title, os.path.dirname(dest), url, e,
                        data_set.archive, os.path.dirname(dest),
                        data_set.source_env))
  print('Successfully downloaded %s (%d bytes).' %
        (os.path.basename(dest), os.path.getsize(dest)))


def check_batches_bin(batches_dir, data_set, exact_size=False):
  """Checks the structure of data_set's record files in batches_dir:
  with exact_size, the official count of records a file; otherwise every
  file whole and none shorter or longer than the others
  (check_record_counts), which admits small data sets made in the same
  format, e.g. for tests.

  Raises:
    errors.DataSetError: naming the first file that is missing, has a partial
      record or a wrong size, or holds a label out of range.
  """
  counts = {name: check_bin_file(os.path.join(batches_dir, name), data_set,
                                 exact_size)
            for name in data_set.all_files}
  check_record_counts(batches_dir, counts, data_set)


def check_record_counts(folder, counts, data_set):
  """Checks that no batch file of a data set (in folder; counts: file name
  -> records it holds) is short or long.

  The official layout is exact: each file holds its official count
  (DataSet.file_records). A file cut at a record boundary, or one holding
  more, is told from the others: the count most training files of one
  official size hold is the data set's, and a file that differs from it is
  named. A data set made smaller in the same format (such training files
  alike, e.g. for tests) is accepted; once they hold the official count,
  the test files must too.

  Raises:
    errors.DataSetError: naming the file whose count differs, with both counts.
  """
  official = data_set.file_records
  for name in data_set.all_files:
    if counts[name] > official(name):
      raise errors.DataSetError(
          '%s: %d records, more than the official %d a file (a padded or '
          'repeated file)' % (os.path.join(folder, name), counts[name],
                              official(name)))
  exact = False
  for size in set(map(official, data_set.train_files)):  # files alike
    alike = [n for n in data_set.train_files if official(n) == size]
    train = [counts[n] for n in alike]
    usual = max(sorted(set(train), reverse=True), key=train.count)
    for name in alike:
      if counts[name] != usual:
        raise errors.DataSetError(
            '%s: %d records, where the other training files hold %d (a cut '
            'or padded file; the official files hold %d each)' % (
                os.path.join(folder, name), counts[name], usual, size))
    exact = exact or usual == size
  if exact:
    for name in data_set.test_files:
      if counts[name] != official(name):
        raise errors.DataSetError(
            '%s: %d records, expected the official %d' % (
                os.path.join(folder, name), counts[name], official(name)))


def check_bin_file(path, data_set, exact_size=False):
  """Checks one binary batch file; see check_batches_bin. Returns its records."""
  if not os.path.isfile(path):
    raise errors.DataSetError('%s: missing' % path)
  size = os.path.getsize(path)
  record = data_set.record_bytes
  count = data_set.file_records(os.path.basename(path))
  if exact_size and size != count * record:
    raise errors.DataSetError(
        '%s: %d bytes, expected exactly %d (%d records of %d '
        'bytes)' % (path, size, count * record, count, record))
  if size == 0 or size % record:
    raise errors.DataSetError(
        '%s: %d bytes is not a whole number of %d-byte records '
        '(truncated or padded file)' % (path, size, record))
  labels = np.memmap(path, dtype=np.uint8, mode='r').reshape(
      -1, record)[:, data_set.label_byte]
  bad = np.flatnonzero(labels >= data_set.num_classes)
  if bad.size:
    raise errors.DataSetError(
        '%s: record %d has label byte %d, expected 0-%d (%s)' % (
            path, bad[0], labels[bad[0]], data_set.num_classes - 1,
            data_set.title))
  return labels.size


def _extract(archive, data_dir, data_set):
  """Extracts archive's data_set.folder into data_dir, all or nothing."""
  began = time.monotonic()
  print('Extracting %s into %s (and checking it) ...' % (archive, data_dir),
        flush=True)
  tmp = tempfile.mkdtemp(prefix='.extract-', dir=data_dir)
  try:
    try:
      with tarfile.open(archive, 'r:gz') as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(data_set.folder + '/') and
                   (m.isfile() or m.isdir())]
        _check_member_sizes(archive, members, data_set)  # before writing a byte
        tar.extractall(tmp, members=members, filter='data')
    except OSError as e:
      if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        raise NoRoomError(
            'no room to extract %s into %s (%s); the archive is kept: free '
            'some space, or point --data_dir at a larger disk' % (
                archive, data_dir, e.strerror))
      raise errors.DataSetError(
          '%s: not a readable gzip-compressed tar archive (%s)' % (archive, e))
    except (tarfile.TarError, EOFError, zlib.error) as e:
      raise errors.DataSetError(
          '%s: not a readable gzip-compressed tar archive (%s)' % (archive, e))
    extracted = os.path.join(tmp, data_set.folder)
    if not os.path.isdir(extracted):
      raise errors.DataSetError('%s: holds no %s/ folder' %
                                (archive, data_set.folder))
    try:
      check_batches_bin(extracted, data_set, exact_size=True)
      _check_names(extracted, data_set)
    except errors.DataSetError as e:
      raise errors.DataSetError('%s: %s' %
                                (archive, str(e).replace(tmp + os.sep, '')))
    os.replace(extracted, os.path.join(data_dir, data_set.folder))
    print('Extracted %s in %.0f s' % (os.path.join(data_dir, data_set.folder),
                                      time.monotonic() - began), flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _check_names(folder, data_set):
  """The archive's class names, where it has a names file, are data_set's."""
  path = os.path.join(folder, data_set.names_file or '')
  if not data_set.names_file or not os.path.isfile(path):
    return
  with open(path, encoding='utf-8', errors='replace') as f:
    names = tuple(line.strip() for line in f if line.strip())
  if names != data_set.class_names:
    raise errors.DataSetError(
        '%s: lists %d class names (%s...), not %s\'s %d (%s...)' % (
            path, len(names), ', '.join(names[:3]), data_set.title,
            data_set.num_classes, ', '.join(data_set.class_names[:3])))


def fingerprint(data_dir, data_set):
  """The md5 of the extracted data set's files, in their order: what a
  run trained on, whatever archive it came from (HParams' data_md5)."""
  digest = hashlib.md5()
  for name in data_set.all_files:
    with open(os.path.join(data_dir, data_set.folder, name), 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        digest.update(chunk)
  return digest.hexdigest()


class NoRoomError(errors.DataSetError):
  """The disk filled while extracting: the archive is not to blame."""


# The largest member of an archive besides its data files (readmes, names)
MAX_OTHER_MEMBER_BYTES = 1 << 20


def _check_member_sizes(archive, members, data_set):
  """Refuses, from the tar headers alone, an archive whose data files are
  not the official size, or that holds anything large besides them: a
  gzip bomb is stopped before it fills the disk."""
  names = set(data_set.all_files)
  for m in members:
    base = m.name[len(data_set.folder) + 1:]
    want = (data_set.file_records(base) * data_set.record_bytes
            if base in names else None)
    if m.isfile() and base in names and m.size != want:
      raise errors.DataSetError(
          '%s: %s is %d bytes, expected exactly %d; nothing was extracted' %
          (archive, m.name, m.size, want))
    if m.isfile() and base not in names and m.size > MAX_OTHER_MEMBER_BYTES:
      raise errors.DataSetError(
          '%s: %s is %d bytes, not part of the data set; nothing was '
          'extracted' % (archive, m.name, m.size))


def resolve_source(data_set, source=None):
  """The archive source: the argument, else $<data_set.source_env>, else
  the official URL."""
  return (source or os.environ.get(data_set.source_env or '') or
          data_set.url)


def maybe_download_and_extract(data_dir, url, data_set):
  """Makes sure data_dir holds an extracted, well-formed data_set (or the
  records its prepare makes).

  Nothing is fetched when data_dir already holds the extracted folder or the
  archive. Otherwise the archive comes from `url` (optional), else from the
  environment variable data_set.source_env, else from the official URL; the
  source is a URL or a local archive path. The official md5 is checked when
  the official archive is downloaded; every archive is checked for structure
  (each file of its official size, labels in range). Extraction goes to a
  temporary folder that is renamed into place only when complete.

  Returns:
    Path of the extracted data_set.folder.

  Raises:
    errors.DataSetError: the data set is missing and cannot be fetched, or is
      malformed; the message names the file and what is wrong.
  """
  batches_dir = os.path.join(data_dir, data_set.folder)
  if os.path.isdir(batches_dir) and not data_set.prepare:
    check_batches_bin(batches_dir, data_set)
    return batches_dir
  if os.path.lexists(batches_dir) and not os.path.isdir(batches_dir):
    raise errors.DataSetError(
        '%s: a file, not the data set\'s folder; move it away '
        'and run again to fetch the data set' % batches_dir)
  made = folders.new_folders(data_dir)
  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise errors.DataSetError('data_dir %s: cannot be created (%s)' %
                              (data_dir, e))
  try:
    return (data_set.prepare or _fetch)(data_dir, url, data_set)
  except BaseException:  # (a stop signal too) no empty folder left behind
    folders.remove_if_empty(made)
    raise


def _fetch(data_dir, url, data_set):
  """maybe_download_and_extract's fetch and extraction into data_dir."""
  batches_dir = os.path.join(data_dir, data_set.folder)
  source = resolve_source(data_set, url)
  archive = os.path.join(data_dir, data_set.archive)
  downloaded = False
  if not os.path.exists(archive):
    if _is_url(source):
      _download(source, archive, data_set)
      downloaded = True
    else:
      source = os.path.expanduser(source)
      if not os.path.isfile(source):
        raise errors.DataSetError(
            'no %s data set in %s and the archive source %s does not '
            'exist; put %s in %s, or point --data_source or $%s at a local '
            'archive path or a mirror URL' % (
                data_set.title, data_dir, source, data_set.archive,
                data_dir, data_set.source_env))
      archive = source  # extract straight from the local file, no copy
  try:
    if (downloaded and source == data_set.url and
        file_md5(archive) != data_set.md5):
      raise errors.DataSetError(
          '%s: md5 %s differs from the official %s (corrupt '
          'download)' % (archive, file_md5(archive), data_set.md5))
    _extract(archive, data_dir, data_set)
  except NoRoomError:
    raise  # the archive is good (checked): kept for the next run
  except errors.DataSetError:
    if downloaded:  # never keep a bad download: the next run fetches again
      os.remove(archive)
    raise
  return batches_dir

