"""The CIFAR-10 data set (binary version): what it is, getting it, checking it.

  maybe_download_and_extract(data_dir, source)  -> data_dir/cifar-10-batches-bin
      fetch the archive (the official URL, a mirror URL or a local path; the
      flag, else $CIFAR10_DATA_SOURCE), check it (md5 of the official
      archive; six files of 30,730,000 bytes, labels 0-9 in every archive),
      extract it into a temporary folder renamed into place when complete.
  check_batches_bin(folder), check_bin_file(path), check_record_counts(...)
      the checks, for data already extracted.
  errors.DataSetError  every problem, as one line naming the file and what is wrong.

The format constants describe the official files (docs/model.md).
"""

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
from cifar10_toolkit import errors
from cifar10_toolkit.cli import DATA_SOURCE_ENV

DATA_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'


ARCHIVE_NAME = 'cifar-10-binary.tar.gz'


def _is_url(source):
  return '://' in source


def _md5(path):
  digest = hashlib.md5()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _download(url, dest):
  """Downloads url to dest (download.fetch: bounded in time and size,
  through a .partial file removed whatever stops it)."""
  try:
    download.fetch(url, dest)
  except download.Failed as e:
    raise errors.DataSetError(
        'no CIFAR-10 data set in %s and fetching %s failed (%s); put %s in '
        '%s, or point --data_source or $%s at a local archive path or a '
        'mirror URL' % (os.path.dirname(dest), url, e, ARCHIVE_NAME,
                        os.path.dirname(dest), DATA_SOURCE_ENV))
  print('Successfully downloaded %s (%d bytes).' %
        (os.path.basename(dest), os.path.getsize(dest)))


def check_batches_bin(batches_dir, exact_size=False):
  """Checks the structure of a cifar-10-batches-bin folder.

  Args:
    batches_dir: folder holding data_batch_1.bin .. data_batch_5.bin and
      test_batch.bin.
    exact_size: require exactly 10,000 records a file (the official layout);
      otherwise every file whole and none shorter or longer than the others
      (check_record_counts), which admits small data sets made in the same
      format, e.g. for tests.

  Raises:
    errors.DataSetError: naming the first file that is missing, has a partial
      record or a wrong size, or holds a label byte above 9.
  """
  counts = {name: check_bin_file(os.path.join(batches_dir, name), exact_size)
            for name in TRAIN_FILES + (TEST_FILE,)}
  check_record_counts(batches_dir, counts, TRAIN_FILES, TEST_FILE)


def check_record_counts(folder, counts, train_names, test_name):
  """Checks that no batch file of a data set is short or long.

  The official layout is exact: five training files and one test file of
  RECORDS_PER_FILE records each. A file cut at a record boundary, or one
  holding more, is told from the others: the count most training files hold
  is the data set's, and a file that differs from it is named. A data set
  made smaller in the same format (every training file alike, e.g. for
  tests) is accepted; once the training files hold the official count, the
  test file must too.

  Args:
    folder: the data set's folder, for the message.
    counts: file name -> records it holds.
    train_names, test_name: the file names of the format.

  Raises:
    errors.DataSetError: naming the file whose count differs, with both counts.
  """
  for name in train_names + (test_name,):
    if counts[name] > RECORDS_PER_FILE:
      raise errors.DataSetError(
          '%s: %d records, more than the official %d a file (a padded or '
          'repeated file)' % (os.path.join(folder, name), counts[name],
                              RECORDS_PER_FILE))
  train = [counts[n] for n in train_names]
  usual = max(sorted(set(train), reverse=True), key=train.count)
  for name in train_names:
    if counts[name] != usual:
      raise errors.DataSetError(
          '%s: %d records, where the other training files hold %d (a cut or '
          'padded file; the official files hold %d each)' % (
              os.path.join(folder, name), counts[name], usual,
              RECORDS_PER_FILE))
  if usual == RECORDS_PER_FILE and counts[test_name] != RECORDS_PER_FILE:
    raise errors.DataSetError('%s: %d records, expected the official %d' % (
        os.path.join(folder, test_name), counts[test_name], RECORDS_PER_FILE))


def check_bin_file(path, exact_size=False):
  """Checks one binary batch file; see check_batches_bin. Returns its records."""
  if not os.path.isfile(path):
    raise errors.DataSetError('%s: missing' % path)
  size = os.path.getsize(path)
  if exact_size and size != FILE_BYTES:
    raise errors.DataSetError(
        '%s: %d bytes, expected exactly %d (10000 records of %d '
        'bytes)' % (path, size, FILE_BYTES, RECORD_BYTES))
  if size == 0 or size % RECORD_BYTES:
    raise errors.DataSetError(
        '%s: %d bytes is not a whole number of %d-byte records '
        '(truncated or padded file)' % (path, size, RECORD_BYTES))
  labels = np.memmap(path, dtype=np.uint8, mode='r').reshape(
      -1, RECORD_BYTES)[:, 0]
  bad = np.flatnonzero(labels >= NUM_CLASSES)
  if bad.size:
    raise errors.DataSetError('%s: record %d has label byte %d, expected 0-9' %
                       (path, bad[0], labels[bad[0]]))
  return labels.size


def _extract(archive, data_dir):
  """Extracts archive's cifar-10-batches-bin into data_dir, all or nothing."""
  began = time.time()
  print('Extracting %s into %s (and checking it) ...' % (archive, data_dir),
        flush=True)
  tmp = tempfile.mkdtemp(prefix='.extract-', dir=data_dir)
  try:
    try:
      with tarfile.open(archive, 'r:gz') as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(BATCHES_DIR + '/') and
                   (m.isfile() or m.isdir())]
        _check_member_sizes(archive, members)  # before writing a byte
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
    extracted = os.path.join(tmp, BATCHES_DIR)
    if not os.path.isdir(extracted):
      raise errors.DataSetError('%s: holds no %s/ folder' %
                                (archive, BATCHES_DIR))
    try:
      check_batches_bin(extracted, exact_size=True)
    except errors.DataSetError as e:
      raise errors.DataSetError('%s: %s' %
                                (archive, str(e).replace(tmp + os.sep, '')))
    os.replace(extracted, os.path.join(data_dir, BATCHES_DIR))
    print('Extracted %s in %.0f s' % (os.path.join(data_dir, BATCHES_DIR),
                                      time.time() - began), flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(data_dir):
  """The md5 of the extracted data set's six files, in their order: what a
  run trained on, whatever archive it came from (HParams' data_md5)."""
  digest = hashlib.md5()
  for name in TRAIN_FILES + (TEST_FILE,):
    with open(os.path.join(data_dir, BATCHES_DIR, name), 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        digest.update(chunk)
  return digest.hexdigest()


class NoRoomError(errors.DataSetError):
  """The disk filled while extracting: the archive is not to blame."""


# The largest member of the archive other than the six data files (the
# readme and batches.meta.txt are a few hundred bytes).
MAX_OTHER_MEMBER_BYTES = 1 << 20


def _check_member_sizes(archive, members):
  """Refuses, from the tar headers alone, an archive whose data files are
  not the official size, or that holds anything large besides them: a
  gzip bomb is stopped before it fills the disk."""
  names = set(TRAIN_FILES + (TEST_FILE,))
  for m in members:
    base = m.name[len(BATCHES_DIR) + 1:]
    if m.isfile() and base in names and m.size != FILE_BYTES:
      raise errors.DataSetError(
          '%s: %s is %d bytes, expected exactly %d; nothing was extracted' %
          (archive, m.name, m.size, FILE_BYTES))
    if m.isfile() and base not in names and m.size > MAX_OTHER_MEMBER_BYTES:
      raise errors.DataSetError(
          '%s: %s is %d bytes, not part of the data set; nothing was '
          'extracted' % (archive, m.name, m.size))


def resolve_source(source=None):
  """The archive source: the argument, else $CIFAR10_DATA_SOURCE, else DATA_URL."""
  return source or os.environ.get(DATA_SOURCE_ENV) or DATA_URL


def maybe_download_and_extract(data_dir, url=None):
  """Makes sure data_dir holds an extracted, well-formed binary CIFAR-10.

  Nothing is fetched when data_dir already holds the extracted folder or the
  archive. Otherwise the archive comes from `url`, else from the environment
  variable CIFAR10_DATA_SOURCE, else from the official DATA_URL; the source
  is a URL or a local archive path. The official md5 is checked when the
  official archive is downloaded; every archive is checked for structure
  (six files of exactly 30,730,000 bytes, labels 0-9). Extraction goes to a
  temporary folder that is renamed into place only when complete.

  Args:
    data_dir: folder for the archive and the extracted data set.
    url: optional source overriding the environment variable and DATA_URL.

  Returns:
    Path of the extracted cifar-10-batches-bin folder.

  Raises:
    errors.DataSetError: the data set is missing and cannot be fetched, or is
      malformed; the message names the file and what is wrong.
  """
  batches_dir = os.path.join(data_dir, BATCHES_DIR)
  if os.path.isdir(batches_dir):
    check_batches_bin(batches_dir)
    return batches_dir
  if os.path.lexists(batches_dir):
    raise errors.DataSetError(
        '%s: a file, not the data set\'s folder; move it away '
        'and run again to fetch the data set' % batches_dir)
  made = new_folders(data_dir)
  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise errors.DataSetError('data_dir %s: cannot be created (%s)' %
                              (data_dir, e))
  try:
    return _fetch(data_dir, url, batches_dir)
  except BaseException:  # (a stop signal too) no empty folder left behind
    remove_if_empty(made)
    raise


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


def _fetch(data_dir, url, batches_dir):
  """maybe_download_and_extract's fetch and extraction into data_dir."""
  source = resolve_source(url)
  archive = os.path.join(data_dir, ARCHIVE_NAME)
  downloaded = False
  if not os.path.exists(archive):
    if _is_url(source):
      _download(source, archive)
      downloaded = True
    else:
      source = os.path.expanduser(source)
      if not os.path.isfile(source):
        raise errors.DataSetError(
            'no CIFAR-10 data set in %s and the archive source %s does not '
            'exist; put %s in %s, or point --data_source or $%s at a local '
            'archive path or a mirror URL' % (data_dir, source, ARCHIVE_NAME,
                                              data_dir, DATA_SOURCE_ENV))
      archive = source  # extract straight from the local file, no copy
  try:
    if downloaded and source == DATA_URL and _md5(archive) != OFFICIAL_MD5:
      raise errors.DataSetError(
          '%s: md5 %s differs from the official %s (corrupt '
          'download)' % (archive, _md5(archive), OFFICIAL_MD5))
    _extract(archive, data_dir)
  except NoRoomError:
    raise  # the archive is good (checked): kept for the next run
  except errors.DataSetError:
    if downloaded:  # never keep a bad download: the next run fetches again
      os.remove(archive)
    raise
  return batches_dir


ORIGINAL_SIZE = 32         # side of the images in the files


NUM_CHANNELS = 3


NUM_CLASSES = 10


NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN = 50000


NUM_EXAMPLES_PER_EPOCH_FOR_EVAL = 10000


CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
               'horse', 'ship', 'truck')


LABEL_BYTES = 1


IMAGE_BYTES = ORIGINAL_SIZE * ORIGINAL_SIZE * NUM_CHANNELS   # 3072


RECORD_BYTES = LABEL_BYTES + IMAGE_BYTES                     # 3073


RECORDS_PER_FILE = 10000


FILE_BYTES = RECORD_BYTES * RECORDS_PER_FILE                 # 30,730,000


OFFICIAL_MD5 = 'c32a1d4ab5d03f1284b67883e8d87530'


BATCHES_DIR = 'cifar-10-batches-bin'


TRAIN_FILES = tuple('data_batch_%d.bin' % i for i in range(1, 6))


TEST_FILE = 'test_batch.bin'
