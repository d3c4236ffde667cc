"""Fetching a file over HTTP(S) or file://, bounded: what
dataset.maybe_download_and_extract uses for the archive.

  fetch(url, dest)    dest written whole or not at all; download.Failed
                      (one line) when it cannot be

Bounds: CONNECT_SECS to connect and answer, and for any one read; a stall
(less than STALL_BYTES in STALL_SECS); the size its Content-Length states,
and never more than MAX_ARCHIVE_BYTES. The .partial file is removed
whatever stops the download (an error, Ctrl-C, a signal the caller turns
into an exception: run_control.fetch_data_set).
"""

import os
import sys
import time
import urllib.error
import urllib.request

# The official archive is ARCHIVE_BYTES; a mirror's may differ a little,
# never by twice.
ARCHIVE_BYTES = 170052171
MAX_ARCHIVE_BYTES = 2 * ARCHIVE_BYTES
CONNECT_SECS = 30  # to connect and get an answer, and for any one read
STALL_SECS = 60  # less than STALL_BYTES in this long is a stall
STALL_BYTES = 1 << 16


class Failed(Exception):
  """The download failed; the message says why, in a few words."""


def fetch(url, dest):
  """Downloads url to dest through dest.partial, with a progress display.

  Raises:
    Failed: no answer, a stall, too large, cut short, or any error of the
      connection or the file (dest is not written).
  """
  partial = dest + '.partial'
  try:
    try:
      _fetch(url, partial, os.path.basename(dest))
    except (urllib.error.URLError, OSError, ValueError) as e:
      raise Failed(getattr(e, 'reason', None) or e)
    os.replace(partial, dest)
  finally:
    if os.path.lexists(partial):
      os.remove(partial)


def _fetch(url, partial, name):
  try:
    response = urllib.request.urlopen(url, timeout=CONNECT_SECS)
  except TimeoutError:
    raise Failed('no answer within %g s' % CONNECT_SECS)
  with response:
    length = int(response.headers.get('Content-Length') or 0)
    if length > MAX_ARCHIVE_BYTES:
      raise Failed('it is %d bytes, more than the %d an archive of '
                            'CIFAR-10 is' % (length, MAX_ARCHIVE_BYTES))
    bound = length or MAX_ARCHIVE_BYTES
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                 os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, 'wb') as out:
      got, mark = 0, (0, time.monotonic())
      read = getattr(response, 'read1', response.read)  # what has come
      while True:
        try:
          chunk = read(1 << 20)
        except TimeoutError:
          raise Failed('stalled: no data for %g s' % CONNECT_SECS)
        if not chunk:
          break
        got += len(chunk)
        if got > bound:
          raise Failed('more than %d bytes%s' % (bound, (
              ', its Content-Length' if length else
              ', more than an archive of CIFAR-10 is')))
        out.write(chunk)
        if got - mark[0] >= STALL_BYTES:
          mark = (got, time.monotonic())
        elif time.monotonic() - mark[1] > STALL_SECS:
          raise Failed('stalled: %d bytes in the last %g s' % (
              got - mark[0], STALL_SECS))
        sys.stdout.write('\r>> Downloading %s %s' % (name, (
            '%.1f%%' % (100.0 * got / length) if length else
            '%.1f MB' % (got / 1e6))))
        sys.stdout.flush()
  print()
  if length and got != length:
    raise Failed('%d of its %d bytes came' % (got, length))
